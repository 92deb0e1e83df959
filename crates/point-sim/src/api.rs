//! HTTP: the Integration API subset (§2.3), the device control routes under `/sim`, the
//! Payments API subset, and the virtual reader's routes.

use crate::machine::{Kind, State};
use crate::sim::{ApiError, Intent, Model, Sim, iso};
use crate::traffic::Presentation;
use crate::webhook;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const BASE: &str = "/point/integration-api";

type Data = web::Data<Sim>;

fn reply(r: Result<Value, ApiError>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error(e),
    }
}

pub fn error(e: ApiError) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(e.status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(e.body())
}

/// `Authorization: Bearer <one of access_tokens>`, else 401.
pub(crate) fn auth(req: &HttpRequest, sim: &Sim) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = !given.is_empty()
        && sim
            .cfg
            .access_tokens
            .iter()
            .any(|t| !t.is_empty() && constant_eq(t.as_bytes(), given.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            401,
            "unauthorized",
            "invalid or missing access token",
        ))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|_| ApiError::new(400, "invalid_body", "the body is not JSON"))
}

/// Runs a handler body that answers with `?` on errors.
fn handled(f: impl FnOnce() -> Result<Value, ApiError>) -> Result<Value, ApiError> {
    f()
}

macro_rules! guarded {
    ($req:expr, $sim:expr, $body:expr) => {{
        match auth(&$req, &$sim) {
            Err(e) => error(e),
            Ok(()) => reply(handled(|| $body)),
        }
    }};
}

async fn get_integrator(req: HttpRequest, sim: Data) -> HttpResponse {
    guarded!(req, sim, {
        let reg = sim.registration.lock().expect("lock").clone();
        Ok(json!({
            "token": sim.cfg.integrator_token,
            "webhook": reg.url,
            "is_valid_webhook": reg.valid,
        }))
    })
}

async fn patch_integrator(req: HttpRequest, sim: Data, body: web::Bytes) -> HttpResponse {
    if let Err(e) = auth(&req, &sim) {
        return error(e);
    }
    let v = match json_body(&body) {
        Ok(v) => v,
        Err(e) => return error(e),
    };
    let url = v.get("webhook").and_then(Value::as_str).unwrap_or("");
    if !webhook::valid_url(url) {
        return error(ApiError::new(
            400,
            "invalid_webhook",
            "webhook must be an absolute http or https URL",
        ));
    }
    let mut reg = sim.registration.lock().expect("lock");
    reg.url = url.to_owned();
    reg.valid = false;
    reg.generation += 1;
    HttpResponse::NoContent().finish()
}

async fn check_integrator(req: HttpRequest, sim: Data) -> HttpResponse {
    if let Err(e) = auth(&req, &sim) {
        return error(e);
    }
    let (url, generation) = {
        let reg = sim.registration.lock().expect("lock");
        (reg.url.clone(), reg.generation)
    };
    let passed = !url.is_empty()
        && webhook::run_challenge(
            &url,
            &sim.cfg.integrator_token,
            Duration::from_millis(sim.cfg.challenge_timeout_ms),
        )
        .await;
    if passed {
        let mut reg = sim.registration.lock().expect("lock");
        // A PATCH during the challenge wins: that URL has not been checked.
        if reg.generation == generation {
            reg.valid = true;
            crate::stats::inc(&sim.stats.challenges_passed);
            return HttpResponse::NoContent().finish();
        }
    }
    crate::stats::inc(&sim.stats.challenges_failed);
    error(ApiError::new(
        400,
        "webhook_validation_failed",
        "the webhook did not answer the challenge",
    ))
}

#[derive(serde::Deserialize)]
struct DeviceQuery {
    offset: Option<usize>,
    limit: Option<usize>,
    store_id: Option<String>,
    pos_id: Option<u64>,
}

async fn list_devices(req: HttpRequest, sim: Data) -> HttpResponse {
    guarded!(req, sim, {
        let q = web::Query::<DeviceQuery>::from_query(req.query_string())
            .map_err(|_| ApiError::new(400, "invalid_query", "offset and limit are integers"))?;
        let m = sim.lock();
        let all: Vec<Value> = sim
            .devices
            .values()
            .filter(|d| q.store_id.as_ref().is_none_or(|s| *s == d.store_id))
            .filter(|d| q.pos_id.is_none_or(|p| p == d.pos_id))
            .map(|d| {
                json!({
                    "id": d.id,
                    "pos_id": d.pos_id,
                    "store_id": d.store_id,
                    "external_pos_id": d.external_pos_id,
                    "operating_mode": m.modes.get(&d.id).copied().unwrap_or(d.operating_mode),
                })
            })
            .collect();
        let offset = q.offset.unwrap_or(0);
        let limit = q.limit.unwrap_or(50);
        let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
        Ok(json!({
            "devices": page,
            "paging": {"total": all.len(), "limit": limit, "offset": offset},
        }))
    })
}

/// A call on device `path` with a JSON body: `PATCH` of its mode, a payment intent or a
/// refund created on it.
async fn on_device(
    req: HttpRequest,
    sim: Data,
    path: web::Path<String>,
    body: web::Bytes,
    call: fn(&Sim, &str, &Value) -> Result<Value, ApiError>,
) -> HttpResponse {
    guarded!(req, sim, {
        let v = json_body(&body)?;
        call(&sim, &path, &v)
    })
}

async fn get_intent(req: HttpRequest, sim: Data, path: web::Path<String>) -> HttpResponse {
    guarded!(req, sim, {
        let m = sim.lock();
        let i = intent(&m, &path, Kind::Payment)?;
        Ok(sim.intent_view(&m, i))
    })
}

async fn intent_last_event(req: HttpRequest, sim: Data, path: web::Path<String>) -> HttpResponse {
    guarded!(req, sim, {
        let m = sim.lock();
        let i = intent(&m, &path, Kind::Payment)?;
        Ok(json!({
            "status": i.state.as_str(),
            "created_on": iso(i.changed_ms, 0),
        }))
    })
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    #[serde(rename = "startDate")]
    start: Option<String>,
    #[serde(rename = "endDate")]
    end: Option<String>,
}

async fn events(req: HttpRequest, sim: Data) -> HttpResponse {
    guarded!(req, sim, {
        let bad = || {
            ApiError::new(
                400,
                "invalid_date",
                "startDate and endDate are ISO dates (YYYY-MM-DD), UTC, inclusive",
            )
        };
        let q = web::Query::<EventsQuery>::from_query(req.query_string()).map_err(|_| bad())?;
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| s.get(..10))
                .and_then(|s| s.parse::<jiff::civil::Date>().ok())
        };
        let (start, end) = (
            parse(&q.start).ok_or_else(bad)?,
            parse(&q.end).ok_or_else(bad)?,
        );
        let m = sim.lock();
        let list: Vec<Value> = m
            .events
            .iter()
            .filter(|(_, _, ms)| {
                let d = jiff::Timestamp::from_millisecond(*ms)
                    .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date())
                    .ok();
                d.is_some_and(|d| d >= start && d <= end)
            })
            .map(|(id, s, ms)| {
                json!({"payment_intent_id": id, "status": s.as_str(), "created_on": iso(*ms, 0)})
            })
            .collect();
        Ok(json!({ "events": list }))
    })
}

/// `DELETE` of a payment intent or a refund on a device.
async fn delete(
    req: HttpRequest,
    sim: Data,
    path: web::Path<(String, String)>,
    kind: Kind,
) -> HttpResponse {
    guarded!(req, sim, {
        let (d, id) = path.into_inner();
        sim.clone().into_inner().api_cancel(&d, &id, kind)
    })
}

/// Intent `id` of `kind`, or the 404 the API answers for one it does not have.
fn intent<'m>(m: &'m Model, id: &str, kind: Kind) -> Result<&'m Intent, ApiError> {
    match m.intents.get(id) {
        Some(i) if i.kind == kind => Ok(i),
        _ if kind == Kind::Refund => Err(ApiError::new(
            404,
            "refund_not_found",
            "refund intent not found",
        )),
        _ => Err(ApiError::new(
            404,
            "payment_intent_not_found",
            "payment intent not found",
        )),
    }
}

async fn get_refund(req: HttpRequest, sim: Data, path: web::Path<String>) -> HttpResponse {
    guarded!(req, sim, {
        let m = sim.lock();
        Ok(Sim::refund_view(intent(&m, &path, Kind::Refund)?))
    })
}

async fn sim_fetch(req: HttpRequest, sim: Data, path: web::Path<String>) -> HttpResponse {
    guarded!(req, sim, sim.clone().into_inner().fetch(&path))
}

async fn sim_cancel(req: HttpRequest, sim: Data, path: web::Path<String>) -> HttpResponse {
    guarded!(req, sim, sim.clone().into_inner().device_cancel(&path))
}

async fn sim_present(
    req: HttpRequest,
    sim: Data,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(e) = auth(&req, &sim) {
        return error(e);
    }
    let card: Presentation = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(ApiError::new(
                400,
                "invalid_presentation",
                format!("the presentation is not valid: {e}"),
            ));
        }
    };
    let client = req
        .app_data::<awc::Client>()
        .cloned()
        .unwrap_or_else(crate::signed::client);
    let sim: Arc<Sim> = sim.into_inner();
    reply(sim.present(&client, &path, card).await)
}

async fn sim_stats(req: HttpRequest, sim: Data) -> HttpResponse {
    guarded!(req, sim, {
        let pending: usize = sim
            .queues
            .lock()
            .expect("lock")
            .values()
            .map(|q| q.len())
            .sum();
        let mut v = serde_json::to_value(sim.stats.snapshot()).expect("stats serialize");
        v["webhooks_queued"] = json!(pending);
        Ok(v)
    })
}

async fn get_payment(req: HttpRequest, sim: Data, path: web::Path<String>) -> HttpResponse {
    if let Err(e) = auth(&req, &sim) {
        return error(e);
    }
    let Some(view) = path
        .parse()
        .ok()
        .and_then(|id| PaymentView::of(&sim.lock(), id))
    else {
        return error(ApiError::new(404, "payment_not_found", "payment not found"));
    };
    HttpResponse::Ok().json(view)
}

/// `GET /v1/payments/{id}`: a typed answer, so that `transaction_amount` reaches the body as
/// written by [`major_units`] and never as a float.
#[derive(serde::Serialize)]
struct PaymentView {
    id: u64,
    status: String,
    status_detail: String,
    transaction_amount: Box<serde_json::value::RawValue>,
    currency_id: String,
    external_reference: Option<String>,
    date_created: String,
    point_of_interaction: Value,
    card: Value,
    amount: i64,
}

impl PaymentView {
    fn of(m: &Model, id: u64) -> Option<PaymentView> {
        let p = m.payments.get(&id)?;
        let final_ = m
            .intents
            .get(&p.intent_id)
            .is_none_or(|i| i.state.is_final() || i.state == State::Processed);
        Some(PaymentView {
            id: p.id,
            status: if final_ { &p.status } else { "in_process" }.to_owned(),
            status_detail: p.status_detail.clone(),
            transaction_amount: major_units(p.amount),
            currency_id: p.currency.clone(),
            external_reference: p.external_reference.clone(),
            date_created: p.date_created.clone(),
            point_of_interaction: json!({"device_id": p.device_id, "payment_intent_id": p.intent_id}),
            card: json!({"id": p.card_id}),
            amount: p.amount,
        })
    }
}

/// Minor units (cents: every site's currency has two places) as the JSON number of major
/// units that Mercado Pago writes (`15`, `15.5`, `-0.05`), rendered from the integer, so no
/// amount passes through a float.
fn major_units(cents: i64) -> Box<serde_json::value::RawValue> {
    let sign = if cents < 0 { "-" } else { "" };
    let (int, frac) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
    let text = match frac {
        0 => format!("{sign}{int}"),
        f if f % 10 == 0 => format!("{sign}{int}.{}", f / 10),
        f => format!("{sign}{int}.{f:02}"),
    };
    serde_json::value::RawValue::from_string(text).expect("a decimal is a JSON number")
}

/// Every route of the simulator.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // In this order: a fixed segment before a parameter in the same place.
    let api = [
        ("integrators", web::get().to(get_integrator)),
        ("integrators", web::patch().to(patch_integrator)),
        ("integrators/check", web::post().to(check_integrator)),
        ("devices", web::get().to(list_devices)),
        (
            "devices/{device_id}",
            web::patch().to(|r, s, p, b| on_device(r, s, p, b, Sim::set_mode)),
        ),
        (
            "devices/{device_id}/payment-intents",
            web::post().to(|r, s, p, b| on_device(r, s, p, b, Sim::create_intent)),
        ),
        (
            "devices/{device_id}/payment-intents/{id}",
            web::delete().to(|r, s, p| delete(r, s, p, Kind::Payment)),
        ),
        ("payment-intents/events", web::get().to(events)),
        ("payment-intents/{id}", web::get().to(get_intent)),
        (
            "payment-intents/{id}/events",
            web::get().to(intent_last_event),
        ),
        (
            "devices/{device_id}/refund",
            web::post().to(|r, s, p, b| on_device(r, s, p, b, Sim::create_refund)),
        ),
        ("refund/{id}", web::get().to(get_refund)),
        (
            "devices/{device_id}/refund/{id}",
            web::delete().to(|r, s, p| delete(r, s, p, Kind::Refund)),
        ),
    ];
    for (path, route) in api {
        cfg.route(&format!("{BASE}/{path}"), route);
    }
    for (path, route) in [
        ("/sim/devices/{device_id}/fetch", web::post().to(sim_fetch)),
        (
            "/sim/devices/{device_id}/present",
            web::post().to(sim_present),
        ),
        (
            "/sim/devices/{device_id}/cancel",
            web::post().to(sim_cancel),
        ),
        ("/sim/stats", web::get().to(sim_stats)),
        ("/v1/payments/{id}", web::get().to(get_payment)),
    ] {
        cfg.route(path, route);
    }
    crate::reader::routes(cfg);
}

#[cfg(test)]
mod tests {
    use super::major_units;

    #[test]
    fn minor_units_render_as_the_number_mercado_pago_writes() {
        for (cents, text) in [
            (1500, "15"),
            (1550, "15.5"),
            (1505, "15.05"),
            (5, "0.05"),
            (-5, "-0.05"),
            (0, "0"),
            (7_000_000, "70000"),
            (9_007_199_254_740_993, "90071992547409.93"),
            (i64::MIN, "-92233720368547758.08"),
        ] {
            assert_eq!(major_units(cents).get(), text, "{cents}");
        }
    }
}
