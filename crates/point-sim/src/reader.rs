//! The virtual card reader of instore-extensions §5: InStore's credit-card extension actions,
//! served by the simulator (the authorizer answers 404 on them) and turned into signed
//! processor requests to our own endpoints through the same engine as the terminals.
//!
//! Decisions where the page and the seed are silent:
//! * Routes live under `/instore/…` and take the simulator's Bearer token (the simulator is a
//!   loopback tool; InStore's `X-Signature` is not verified here). Requests are the seed's
//!   bare (synchronous) bodies; answers are the seed's response bodies, HTTP 200, business
//!   failures as `"result":"Failure"`.
//! * Sales are made at the merchant of `reader.device` (default: the first configured
//!   device), in the presented card's currency; `amount` must be `{amount, precision: 2,
//!   currency}` with the card's currency. The card is read by chip with an online PIN.
//! * `processor_id` is the authorization's `transaction.id` (`ctx-vr-<uuid>`), sent with
//!   the idempotency key `pt-auth-vr-<uuid>`; its advices use `vr-adv-<uuid>`.
//! * `credit_available_refund` answers `data.amount` as a decimal string (`"15.00"`);
//!   `create_credit_refund` takes `amount` as a decimal string (or integer digits) of major
//!   units and allows partial refunds up to what is left; each refund is its own credit
//!   adjustment `<processor_id>-rf<n>`.
//! * `cancel_credit_payment` reverses the full amount once; a second cancel answers Success
//!   with no traffic; a payment with refunds cannot be cancelled (Failure).
//! * A timeout or an unavailable authorizer answers Failure `CLIENT_TIMEOUT` /
//!   `CLIENT_UNAVAILABLE` and sends the advice, as the terminals do.

use crate::api::{auth, error};
use crate::config::VirtualCard;
use crate::signed::{ADJ_CREDIT, NOTIFY};
use crate::sim::{AuthOutcome, Sim, local_date_time};
use crate::traffic::{self, Presentation, TxBody};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// A sale collected by the reader.
#[derive(Debug, Clone)]
pub struct ReaderSale {
    pub processor_id: String,
    pub cart_key: String,
    pub reference: String,
    pub auth: TxBody,
    pub amount: i64,
    pub refunded: i64,
    pub refunds: u32,
    pub cancelled: bool,
    pub data: Value,
    /// The device's UTC offset, for the adjustments' `local_date_time`.
    pub offset_hours: i8,
}

#[derive(Default)]
pub struct ReaderState {
    /// By processor id.
    pub sales: HashMap<String, ReaderSale>,
    pub by_cart: HashMap<String, String>,
    pub by_reference: HashMap<String, String>,
}

fn failure(msg: &str) -> Value {
    json!({"result": "Failure", "error": msg})
}

fn data_of(id: &str, card: &VirtualCard) -> Value {
    json!({
        "processor": "Custom",
        "processor_id": id,
        "last4": card.last_four,
        "brand": card.provider.to_lowercase(),
        "account_type": card.product_type.to_lowercase(),
        "method": "Custom Credit Card",
        "verifySignature": false,
        "application_preferred_name": null,
        "dedicated_file_name": null,
        "authorization_response_code": "3030",
        "application_cryptogram": null,
        "terminal_verification_results": null,
        "transaction_status_information": null,
    })
}

fn ped_ok(sim: &Sim, body: &Value) -> bool {
    let code = body["ped"]["registration_code"].as_str().unwrap_or("");
    !code.is_empty()
        && sim
            .cfg
            .reader
            .as_ref()
            .is_some_and(|r| r.peds.iter().any(|p| p == code))
}

/// Major-unit decimal text (`"15.00"`, `"15"`) to minor units.
fn minor_of(text: &str) -> Option<i64> {
    let decimals = text.split_once('.').map_or(0, |(_, f)| f.len());
    if text.starts_with('-') || decimals > 2 {
        return None;
    }
    protocol::minor::parse_minor(text, 2)
}

async fn collect(sim: &Arc<Sim>, client: &awc::Client, body: &Value) -> Value {
    let cart_key = body["cartKey"].as_str().unwrap_or("").to_owned();
    let with_cart = |mut v: Value| {
        v["cartKey"] = json!(cart_key);
        v
    };
    if !ped_ok(sim, body) {
        return with_cart(failure("Device Offline"));
    }
    let key = body["testCard"].as_str().unwrap_or("");
    let Some(card) = sim.cfg.virtual_cards.iter().find(|c| c.key == key).cloned() else {
        return with_cart(failure("Unknown test card"));
    };
    let amount = &body["amount"];
    let minor = match (
        amount["amount"].as_i64(),
        amount["precision"].as_i64(),
        amount["currency"].as_str(),
    ) {
        (Some(a), Some(2), Some(c)) if a > 0 && c == card.currency => a,
        _ => {
            return with_cart(failure(
                "amount must be {amount, precision: 2, currency} in the card's currency",
            ));
        }
    };
    let device = match sim.cfg.reader.as_ref().map(|r| r.device.as_str()) {
        Some(d) if !d.is_empty() => sim.devices.get(d),
        _ => sim.devices.values().next(),
    };
    let Some(device) = device.cloned() else {
        return with_cart(failure("no device configured for the reader"));
    };
    let uuid = crate::webhook::uuid_v4();
    let presentation = Presentation {
        card_id: card.card_id.clone(),
        user_id: card.user_id.clone(),
        product_type: card.product_type.clone(),
        provider: card.provider.clone(),
        last_four: card.last_four.clone(),
        entry_mode: "CHIP".into(),
        pin: true,
        answer_delay_ms: None,
    };
    let auth = traffic::authorization(&traffic::Sale {
        transaction_id: format!("ctx-vr-{uuid}"),
        device: &device,
        card: &presentation,
        amount_minor: minor,
        currency: card.currency.clone(),
        local_date_time: local_date_time(crate::webhook::now_ms(), device.site.utc_offset_hours()),
        installments: None,
    });
    let id = auth.transaction.id.clone();
    let adv_key = format!("vr-adv-{uuid}");
    let outcome = sim
        .authorize(client, &auth, &format!("vr-{uuid}"), None)
        .await;
    let reject = |detail: &str| traffic::advice(&auth, detail, &adv_key);
    let detail = match outcome {
        AuthOutcome::Approved => None,
        AuthOutcome::Rejected(d) => Some(d),
        AuthOutcome::Timeout => Some("CLIENT_TIMEOUT".to_owned()),
        AuthOutcome::Unavailable => Some("CLIENT_UNAVAILABLE".to_owned()),
        AuthOutcome::BadSignature => Some("CLIENT_SIGNATURE_ERROR".to_owned()),
        AuthOutcome::Refused => Some("INVALID_TRANSACTION".to_owned()),
    };
    sim.record_csv(&[crate::csv::Row::of(
        &auth,
        "AUTHORIZATION",
        detail.is_none(),
    )]);
    if let Some(d) = detail {
        sim.followup(client, NOTIFY, &adv_key, reject(&d), None)
            .await;
        return with_cart(failure(&d));
    }
    let data = data_of(&id, &card);
    let mut m = sim.lock();
    m.reader.by_cart.insert(cart_key.clone(), id.clone());
    if let Some(r) = body["reference"].as_str() {
        m.reader.by_reference.insert(r.to_owned(), id.clone());
    }
    m.reader.sales.insert(
        id.clone(),
        ReaderSale {
            processor_id: id.clone(),
            cart_key: cart_key.clone(),
            reference: body["reference"].as_str().unwrap_or("").to_owned(),
            auth,
            amount: minor,
            refunded: 0,
            refunds: 0,
            cancelled: false,
            data: data.clone(),
            offset_hours: device.site.utc_offset_hours(),
        },
    );
    json!({"result": "Success", "error": null, "cartKey": cart_key, "data": data, "status": "succeeded"})
}

/// Sends a credit adjustment for a reader sale (refund or reversal) until it is taken.
async fn adjust(
    sim: &Arc<Sim>,
    client: &awc::Client,
    sale: &ReaderSale,
    id: &str,
    kind: &str,
    minor: i64,
    key: &str,
) -> bool {
    let body = traffic::with_amount(
        traffic::credit_adjustment(
            &sale.auth,
            id,
            kind,
            &local_date_time(crate::webhook::now_ms(), sale.offset_hours),
        ),
        minor,
    );
    let row = crate::csv::Row::of(&body, "ADJUSTMENT", true);
    let taken = sim
        .followup(client, ADJ_CREDIT, key, body.to_bytes(), Some(row))
        .await;
    taken != Some(false)
}

async fn refund(sim: &Arc<Sim>, client: &awc::Client, body: &Value) -> Value {
    let reference = body["reference"].as_str().unwrap_or("");
    let minor = match &body["amount"] {
        Value::String(s) => minor_of(s),
        Value::Number(n) => n.as_i64().and_then(|n| n.checked_mul(100)),
        _ => None,
    };
    let (sale, n) = {
        let mut m = sim.lock();
        let Some(id) = m.reader.by_reference.get(reference).cloned() else {
            return failure("No sale collected under this reference");
        };
        let sale = m.reader.sales.get_mut(&id).expect("indexed");
        let Some(minor) = minor.filter(|a| *a > 0) else {
            return failure("amount must be a positive decimal string");
        };
        if body["last4"]
            .as_str()
            .is_some_and(|l| l != sale.auth.card.last_four)
        {
            return failure("last4 does not match the sale");
        }
        if body["currency"]
            .as_str()
            .is_some_and(|c| c != sale.auth.amount.local.currency)
        {
            return failure("currency does not match the sale");
        }
        if sale.cancelled || sale.refunded + minor > sale.amount {
            return failure("Amount exceeds the refundable amount");
        }
        // Reserved now so that concurrent refunds cannot exceed the sale.
        sale.refunded += minor;
        sale.refunds += 1;
        ((sale.clone(), minor), sale.refunds)
    };
    let (sale, minor) = sale;
    let id = format!("{}-rf{n}", sale.processor_id);
    let key = format!("vr-refund-{}-{n}", sale.processor_id);
    if !adjust(sim, client, &sale, &id, "REFUND", minor, &key).await {
        if let Some(s) = sim.lock().reader.sales.get_mut(&sale.processor_id) {
            s.refunded -= minor;
        }
        return failure("the refund was refused");
    }
    let mut data = sale.data.clone();
    data["processor_id"] = json!(id);
    json!({"result": "Success", "error": null, "data": data, "status": "approved"})
}

async fn cancel(sim: &Arc<Sim>, client: &awc::Client, body: &Value) -> Value {
    let pid = body["processor_id"].as_str().unwrap_or("");
    let sale = {
        let mut m = sim.lock();
        let Some(sale) = m.reader.sales.get_mut(pid) else {
            return failure("Unknown processor_id");
        };
        if sale.cancelled {
            return json!({"result": "Success", "error": null, "data": sale.data, "status": "approved"});
        }
        if sale.refunded > 0 {
            return failure("A refunded payment cannot be cancelled");
        }
        sale.cancelled = true;
        sale.clone()
    };
    let id = format!("{}-rev", sale.processor_id);
    let key = format!("vr-rev-{}", sale.processor_id);
    if !adjust(
        sim,
        client,
        &sale,
        &id,
        "REVERSAL_PURCHASE",
        sale.amount,
        &key,
    )
    .await
    {
        if let Some(s) = sim.lock().reader.sales.get_mut(pid) {
            s.cancelled = false;
        }
        return failure("the reversal was refused");
    }
    json!({"result": "Success", "error": null, "data": sale.data, "status": "approved"})
}

fn lookup(sim: &Sim, id: &str) -> Value {
    match sim.lock().reader.sales.get(id) {
        Some(s) => {
            let mut data = s.data.clone();
            data["amount"] = json!({"amount": s.amount, "precision": 2, "currency": s.auth.amount.local.currency});
            data["refunded"] = json!(traffic::decimal(s.refunded));
            data["cancelled"] = json!(s.cancelled);
            json!({"result": "Success", "error": null, "cartKey": s.cart_key, "reference": s.reference, "data": data, "status": if s.cancelled { "canceled" } else { "succeeded" }})
        }
        None => failure("Unknown transaction"),
    }
}

async fn action(
    req: HttpRequest,
    sim: web::Data<Sim>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(e) = auth(&req, &sim) {
        return error(e);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let client = req
        .app_data::<awc::Client>()
        .cloned()
        .unwrap_or_else(crate::signed::client);
    let sim: Arc<Sim> = sim.into_inner();
    let v = match path.as_str() {
        "initialize_credit_processor" => json!({
            "result": "Success", "error": null,
            "data": {"captureEnabled": false, "simulated": true}
        }),
        "connect_card_reader" if ped_ok(&sim, &body) => json!({"result": "Success", "error": null}),
        "connect_card_reader" => failure("Device Offline"),
        "collect_credit_payment" => collect(&sim, &client, &body).await,
        "capture_payment" => {
            let cart = body["cartKey"].as_str().unwrap_or("");
            let id = sim.lock().reader.by_cart.get(cart).cloned();
            match id {
                Some(id) => lookup(&sim, &id),
                None => failure("Unknown cartKey"),
            }
        }
        "create_credit_refund" => refund(&sim, &client, &body).await,
        "cancel_credit_payment" => cancel(&sim, &client, &body).await,
        _ => {
            return error(crate::sim::ApiError::new(
                404,
                "not_found",
                "no such InStore action",
            ));
        }
    };
    HttpResponse::Ok().json(v)
}

/// A `GET` about the sale of processor id `path`, answered by `answer` once the token
/// is checked.
async fn get_sale(
    req: HttpRequest,
    sim: web::Data<Sim>,
    path: web::Path<String>,
    answer: fn(&Sim, &str) -> Value,
) -> HttpResponse {
    if let Err(e) = auth(&req, &sim) {
        return error(e);
    }
    HttpResponse::Ok().json(answer(&sim, &path))
}

/// What is left to refund of sale `id`.
fn available_refund(sim: &Sim, id: &str) -> Value {
    match sim.lock().reader.sales.get(id) {
        Some(s) => {
            let left = if s.cancelled {
                0
            } else {
                s.amount - s.refunded
            };
            json!({"result": "Success", "error": null, "data": {"amount": traffic::decimal(left)}})
        }
        None => failure("Unknown processor_id"),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/instore/payment_transaction/{id}",
        web::get().to(|r, s, p| get_sale(r, s, p, lookup)),
    )
    .route(
        "/instore/credit_available_refund/{id}",
        web::get().to(|r, s, p| get_sale(r, s, p, available_refund)),
    )
    .route("/instore/{action}", web::post().to(action));
}

#[cfg(test)]
mod tests {
    use super::minor_of;

    #[test]
    fn refund_amounts() {
        assert_eq!(minor_of("15.00"), Some(1500));
        assert_eq!(minor_of("15.5"), Some(1550));
        assert_eq!(minor_of("15"), Some(1500));
        assert_eq!(minor_of("0.07"), Some(7));
        for bad in ["", ".5", "1.005", "-1", "1e2", "1,5"] {
            assert_eq!(minor_of(bad), None, "{bad}");
        }
    }
}
