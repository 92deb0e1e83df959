//! The in-memory model (devices, intents, refund intents, payments, webhook registration)
//! and the operations on it: the API's rules (§2.3), the timers (§2.4), the engine that
//! turns a presented card into issuer traffic (§2.5, §2.7).

use crate::config::{Config, DeviceConfig, Notify, OperatingMode};
use crate::machine::{self, Event, Kind, Refusal, State};
use crate::signed::{self, ADJ_CREDIT, AUTH_DEBIT, Failure, NOTIFY, Signer};
use crate::stats::{Stats, inc};
use crate::traffic::{self, Presentation, TxBody};
use crate::webhook::{self, Pending, Registration, now_ms};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An error of the Integration API, in Mercado Pago's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn body(&self) -> Value {
        json!({"message": self.message, "error": self.code, "status": self.status, "cause": []})
    }
}

/// A payment intent or a refund intent.
#[derive(Debug, Clone)]
pub struct Intent {
    pub id: String,
    pub kind: Kind,
    pub device_id: String,
    pub state: State,
    pub created_ms: i64,
    pub changed_ms: i64,
    /// Payment: the intent's amount; refund: the refunded payment's.
    pub amount: i64,
    /// Payment intents: the request's fields as received (echoed back).
    pub request: Map<String, Value>,
    pub additional_info: Value,
    /// Payment: assigned on entering `PROCESSING`; refund: the payment refunded.
    pub payment_id: Option<u64>,
    /// `approved`, `rejected`, `reversed`, `refunded` or `""` (unknown).
    pub payment_state: Option<String>,
    pub payment_type: Option<String>,
    pub history: Vec<(State, i64)>,
}

/// A payment, as `GET /v1/payments/{id}` shows it.
#[derive(Debug, Clone)]
pub struct Payment {
    pub id: u64,
    pub intent_id: String,
    pub device_id: String,
    pub amount: i64,
    pub currency: String,
    /// `in_process` until the intent ends; then `approved`, `rejected`, `cancelled`,
    /// `refunded`.
    pub status: String,
    pub status_detail: String,
    pub external_reference: Option<String>,
    pub date_created: String,
    pub card_id: String,
    pub user_id: String,
    pub payment_type: String,
    /// The refund intent that holds or refunded it.
    pub refund_id: Option<String>,
    pub auth: TxBody,
}

#[derive(Default)]
pub struct Model {
    pub modes: HashMap<String, OperatingMode>,
    pub intents: HashMap<String, Intent>,
    /// Intent ids in creation order.
    pub order: Vec<String>,
    pub payments: BTreeMap<u64, Payment>,
    pub next_payment: u64,
    /// Every state entered by a payment intent: (intent id, state, unix ms).
    pub events: Vec<(String, State, i64)>,
    /// Virtual reader payments by `cartKey` (instore-extensions §5).
    pub reader: crate::reader::ReaderState,
}

/// The first payment id (§2.3).
pub const FIRST_PAYMENT_ID: u64 = 10_000_000_001;

pub struct Sim {
    pub cfg: Config,
    pub devices: BTreeMap<String, DeviceConfig>,
    pub signer: Signer,
    pub stats: Stats,
    pub model: Mutex<Model>,
    pub registration: Mutex<Registration>,
    pub queues: Mutex<HashMap<String, VecDeque<Pending>>>,
    csv: Option<Mutex<std::fs::File>>,
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS` in UTC (the notifications' `created_at`).
pub fn utc_seconds(ms: i64) -> String {
    zoned(ms, 0).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// Unix ms as device-local `YYYY-MM-DDTHH:MM:SS` (`local_date_time`).
pub fn local_date_time(ms: i64, offset_hours: i8) -> String {
    zoned(ms, offset_hours)
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// Unix ms as ISO 8601 with milliseconds and the offset (`-03:00`, or `Z` for UTC).
pub fn iso(ms: i64, offset_hours: i8) -> String {
    let z = zoned(ms, offset_hours);
    let off = if offset_hours == 0 {
        "Z".to_owned()
    } else {
        format!("{:+03}:00", offset_hours)
    };
    format!(
        "{}.{:03}{off}",
        z.strftime("%Y-%m-%dT%H:%M:%S"),
        ms.rem_euclid(1000)
    )
}

fn zoned(ms: i64, offset_hours: i8) -> jiff::Zoned {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let off = jiff::tz::Offset::from_hours(offset_hours).unwrap_or(jiff::tz::Offset::UTC);
    ts.to_zoned(jiff::tz::TimeZone::fixed(off))
}

#[derive(Serialize)]
struct NotePayment<'a> {
    id: u64,
    #[serde(rename = "type")]
    kind: &'a str,
    state: &'a str,
}

/// The notification body of §1.8 / §2.6.
#[derive(Serialize)]
struct Note<'a> {
    id: &'a str,
    created_at: String,
    amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment: Option<NotePayment<'a>>,
    additional_info: Value,
    state: &'a str,
    caller_id: u64,
    client_id: u64,
    /// Refund intents only: tells them apart from payment intents.
    #[serde(skip_serializing_if = "Option::is_none")]
    intent_type: Option<&'a str>,
}

/// The notification of `intent` in its current state.
pub fn notification(intent: &Intent) -> Vec<u8> {
    let s = intent.state;
    let payment = match (s, intent.payment_id) {
        (State::Canceled | State::Error | State::Abandoned, _) | (_, None) => None,
        (State::ConfirmationRequired, Some(id)) => Some(NotePayment {
            id,
            kind: "",
            state: "",
        }),
        (_, Some(id)) => Some(NotePayment {
            id,
            kind: intent.payment_type.as_deref().unwrap_or(""),
            state: intent.payment_state.as_deref().unwrap_or(""),
        }),
    };
    let mut info = Map::new();
    for k in ["external_reference", "ticket_number"] {
        if let Some(v) = intent.additional_info.get(k) {
            info.insert(k.into(), v.clone());
        }
    }
    serde_json::to_vec(&Note {
        id: &intent.id,
        created_at: utc_seconds(intent.created_ms),
        amount: intent.amount,
        payment,
        additional_info: Value::Object(info),
        state: s.as_str(),
        caller_id: 1,
        client_id: 1,
        intent_type: (intent.kind == Kind::Refund).then_some("refund"),
    })
    .expect("a notification serializes")
}

/// A notification to send once the model's lock is released.
pub type Outbox = Vec<(String, Vec<u8>)>;

impl Sim {
    pub fn new(cfg: Config, signer: Signer) -> anyhow::Result<Sim> {
        let devices: BTreeMap<String, DeviceConfig> = cfg
            .devices
            .iter()
            .map(|d| (d.id.clone(), d.clone()))
            .collect();
        let model = Model {
            modes: devices
                .values()
                .map(|d| (d.id.clone(), d.operating_mode))
                .collect(),
            next_payment: FIRST_PAYMENT_ID,
            ..Model::default()
        };
        let csv = if cfg.transactions_csv.is_empty() {
            None
        } else {
            Some(Mutex::new(crate::csv::open(&cfg.transactions_csv)?))
        };
        Ok(Sim {
            cfg,
            devices,
            signer,
            stats: Stats::default(),
            model: Mutex::new(model),
            registration: Mutex::new(Registration::default()),
            queues: Mutex::new(HashMap::new()),
            csv,
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().expect("model lock")
    }

    pub fn device(&self, id: &str) -> Result<&DeviceConfig, ApiError> {
        self.devices
            .get(id)
            .ok_or_else(|| ApiError::new(404, "device_not_found", format!("device {id} not found")))
    }

    /// Applies `event` to the intent, records it, and queues its notification in `out`.
    pub fn transition(
        &self,
        m: &mut Model,
        id: &str,
        event: Event,
        out: &mut Outbox,
    ) -> Result<State, Refusal> {
        let now = now_ms();
        let intent = m.intents.get_mut(id).ok_or(Refusal::NotAllowed)?;
        let to = machine::next(intent.kind, intent.state, event)?;
        intent.state = to;
        intent.changed_ms = now;
        intent.history.push((to, now));
        // A refund that did not happen frees its payment for another refund.
        if intent.kind == Kind::Refund
            && matches!(to, State::Canceled | State::Error | State::Abandoned)
            && let Some(p) = intent.payment_id.and_then(|p| m.payments.get_mut(&p))
            && p.refund_id.as_deref() == Some(id)
        {
            p.refund_id = None;
        }
        let intent = &m.intents[id];
        if intent.kind == Kind::Payment {
            m.events.push((id.to_owned(), to, now));
        }
        let send = match self.cfg.notify {
            Notify::All => to != State::Open,
            Notify::Final => to.is_final(),
        };
        if send {
            out.push((id.to_owned(), notification(intent)));
        }
        Ok(to)
    }

    /// Sends what transitions queued.
    pub fn flush(self: &Arc<Self>, out: Outbox) {
        for (id, body) in out {
            webhook::enqueue(self, &id, body);
        }
    }

    /// The intent a device holds (`OPEN` … `PROCESSED`), if any.
    pub fn active_on(m: &Model, device_id: &str) -> Option<String> {
        m.order
            .iter()
            .find(|id| {
                let i = &m.intents[*id];
                i.device_id == device_id && i.state.occupies_device()
            })
            .cloned()
    }

    fn check_takes_intents(&self, m: &Model, device_id: &str) -> Result<(), ApiError> {
        self.device(device_id)?;
        if m.modes.get(device_id) != Some(&OperatingMode::Pdv) {
            return Err(ApiError::new(
                409,
                "device_not_in_pdv_mode",
                "the device is not in integrated (PDV) mode",
            ));
        }
        if Self::active_on(m, device_id).is_some() {
            return Err(ApiError::new(
                409,
                "device_busy",
                "the device already has a queued or running intent",
            ));
        }
        Ok(())
    }

    /// `POST /devices/{id}/payment-intents` (§1.3, §2.3).
    pub fn create_intent(&self, device_id: &str, body: &Value) -> Result<Value, ApiError> {
        let device = self.device(device_id)?;
        let req = body
            .as_object()
            .ok_or_else(|| ApiError::new(400, "invalid_body", "the body must be a JSON object"))?;
        let amount = check_amount(device.site, req.get("amount"))?;
        if device.site == crate::config::Site::Mlb
            && let Some(p) = req.get("payment")
        {
            check_mlb_payment(p, amount)?;
        }
        let mut m = self.lock();
        self.check_takes_intents(&m, device_id)?;
        let id = webhook::uuid_v4();
        let now = now_ms();
        let intent = Intent {
            id: id.clone(),
            kind: Kind::Payment,
            device_id: device_id.to_owned(),
            state: State::Open,
            created_ms: now,
            changed_ms: now,
            amount,
            request: req.clone(),
            additional_info: req.get("additional_info").cloned().unwrap_or(Value::Null),
            payment_id: None,
            payment_state: None,
            payment_type: None,
            history: vec![(State::Open, now)],
        };
        m.events.push((id.clone(), State::Open, now));
        m.order.push(id.clone());
        m.intents.insert(id.clone(), intent);
        let mut out = req.clone();
        out.insert("id".into(), json!(id));
        out.insert("device_id".into(), json!(device_id));
        Ok(Value::Object(out))
    }

    /// The intent as `GET /payment-intents/{id}` shows it.
    pub fn intent_view(&self, m: &Model, intent: &Intent) -> Value {
        let mut v = Map::new();
        v.insert("state".into(), json!(intent.state.as_str()));
        v.insert("id".into(), json!(intent.id));
        v.insert("device_id".into(), json!(intent.device_id));
        v.insert("amount".into(), json!(intent.amount));
        if let Some(d) = intent.request.get("description") {
            v.insert("description".into(), d.clone());
        }
        let mut payment = intent
            .request
            .get("payment")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(pid) = intent.payment_id {
            payment.insert("id".into(), json!(pid.to_string()));
            if let Some(t) = &intent.payment_type {
                payment.insert("type".into(), json!(t));
            }
            if let Some(s) = &intent.payment_state {
                payment.insert("state".into(), json!(s));
            }
        }
        if !payment.is_empty() {
            v.insert("payment".into(), Value::Object(payment));
        }
        v.insert("additional_info".into(), intent.additional_info.clone());
        let _ = m;
        Value::Object(v)
    }

    pub fn refund_view(intent: &Intent) -> Value {
        json!({
            "device_id": intent.device_id,
            "id": intent.id,
            "payment_id": intent.payment_id,
            "state": intent.state.as_str(),
            "additional_info": intent.additional_info,
        })
    }

    /// `DELETE /devices/{d}/payment-intents/{id}` or `/refund/{id}`.
    pub fn api_cancel(
        self: &Arc<Self>,
        device_id: &str,
        id: &str,
        kind: Kind,
    ) -> Result<Value, ApiError> {
        self.device(device_id)?;
        let mut m = self.lock();
        let found = m
            .intents
            .get(id)
            .is_some_and(|i| i.kind == kind && i.device_id == device_id);
        if !found {
            return Err(not_found(kind));
        }
        let mut out = Vec::new();
        match self.transition(&mut m, id, Event::ApiCancel, &mut out) {
            Ok(_) => {}
            Err(_) if kind == Kind::Refund => {
                return Err(ApiError::new(
                    409,
                    "refund_not_cancelable",
                    "only an OPEN refund intent can be cancelled through the API",
                ));
            }
            Err(_) => {
                return Err(ApiError::new(
                    409,
                    "intent_not_cancelable",
                    "only an OPEN intent that has not reached the device can be cancelled through the API",
                ));
            }
        }
        drop(m);
        self.flush(out);
        Ok(json!({ "id": id }))
    }

    /// `POST /devices/{d}/refund` (§2.7).
    pub fn create_refund(&self, device_id: &str, body: &Value) -> Result<Value, ApiError> {
        self.device(device_id)?;
        let pid = match body.get("payment_id") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::new(400, "invalid_payment_id", "payment_id must be a payment id")
        })?;
        let additional_info = body.get("additional_info").cloned().unwrap_or(Value::Null);
        let mut m = self.lock();
        let refusal = || {
            ApiError::new(
                409,
                "refund_not_allowed",
                "the payment is unknown, not approved, of another device, or already refunded",
            )
        };
        let p = m.payments.get(&pid).ok_or_else(refusal)?;
        if p.status != "approved" || p.device_id != device_id || p.refund_id.is_some() {
            return Err(refusal());
        }
        let amount = p.amount;
        let payment_type = p.payment_type.clone();
        self.check_takes_intents(&m, device_id)?;
        let id = webhook::uuid_v4();
        let now = now_ms();
        m.payments.get_mut(&pid).expect("found").refund_id = Some(id.clone());
        m.order.push(id.clone());
        m.intents.insert(
            id.clone(),
            Intent {
                id: id.clone(),
                kind: Kind::Refund,
                device_id: device_id.to_owned(),
                state: State::Open,
                created_ms: now,
                changed_ms: now,
                amount,
                request: Map::new(),
                additional_info: additional_info.clone(),
                payment_id: Some(pid),
                payment_state: None,
                payment_type: Some(payment_type),
                history: vec![(State::Open, now)],
            },
        );
        Ok(json!({
            "id": id,
            "payment_id": pid,
            "device_id": device_id,
            "additional_info": additional_info,
        }))
    }

    /// `POST /sim/devices/{d}/fetch`: the oldest `OPEN` intent becomes `ON_TERMINAL`.
    pub fn fetch(self: &Arc<Self>, device_id: &str) -> Result<Value, ApiError> {
        let none = || ApiError::new(404, "no_open_intent", "the device has no OPEN intent");
        self.device_step(device_id, State::Open, Event::Fetch, none)
    }

    fn any_view(&self, m: &Model, id: &str) -> Value {
        let i = &m.intents[id];
        match i.kind {
            Kind::Payment => self.intent_view(m, i),
            Kind::Refund => Self::refund_view(i),
        }
    }

    /// `POST /sim/devices/{d}/cancel`: `ON_TERMINAL` becomes `CANCELED`.
    pub fn device_cancel(self: &Arc<Self>, device_id: &str) -> Result<Value, ApiError> {
        let none = || {
            ApiError::new(
                409,
                "intent_not_cancelable",
                "the device shows no intent (ON_TERMINAL) to cancel",
            )
        };
        self.device_step(device_id, State::OnTerminal, Event::DeviceCancel, none)
    }

    /// What the device does to its oldest intent in `from`: `event`, answered with the
    /// intent's view; `none` when the device has no intent in that state.
    fn device_step(
        self: &Arc<Self>,
        device_id: &str,
        from: State,
        event: Event,
        none: impl FnOnce() -> ApiError,
    ) -> Result<Value, ApiError> {
        self.device(device_id)?;
        let mut m = self.lock();
        let id = m
            .order
            .iter()
            .find(|id| {
                let i = &m.intents[*id];
                i.device_id == device_id && i.state == from
            })
            .cloned()
            .ok_or_else(none)?;
        let mut out = Vec::new();
        self.transition(&mut m, &id, event, &mut out)
            .unwrap_or_else(|e| panic!("{from:?} takes {event:?}: {e:?}"));
        let v = self.any_view(&m, &id);
        drop(m);
        self.flush(out);
        Ok(v)
    }

    /// The sweeper's pass: `OPEN` / `ON_TERMINAL` intents idle for `abandon_after_secs`
    /// become `ABANDONED`. No issuer traffic.
    pub fn sweep(self: &Arc<Self>) {
        let limit = now_ms() - (self.cfg.abandon_after_secs as i64) * 1000;
        let mut m = self.lock();
        let stale: Vec<String> = m
            .order
            .iter()
            .filter(|id| {
                let i = &m.intents[*id];
                matches!(i.state, State::Open | State::OnTerminal) && i.changed_ms <= limit
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in stale {
            let _ = self.transition(&mut m, &id, Event::Timer, &mut out);
        }
        drop(m);
        self.flush(out);
    }

    /// Appends processor transactions to the CSV, when configured.
    pub fn record_csv(&self, rows: &[crate::csv::Row]) {
        if let Some(f) = &self.csv {
            let mut f = f.lock().expect("csv lock");
            for r in rows {
                let _ = f.write_all(r.line().as_bytes());
            }
            let _ = f.flush();
        }
    }

    /// `PATCH /devices/{id}`.
    pub fn set_mode(&self, device_id: &str, body: &Value) -> Result<Value, ApiError> {
        self.device(device_id)?;
        let mode: OperatingMode = body
            .get("operating_mode")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "invalid_operating_mode",
                    "operating_mode must be PDV or STANDALONE",
                )
            })?;
        self.lock().modes.insert(device_id.to_owned(), mode);
        Ok(json!({ "operating_mode": mode }))
    }
}

fn not_found(kind: Kind) -> ApiError {
    match kind {
        Kind::Payment => ApiError::new(404, "payment_intent_not_found", "payment intent not found"),
        Kind::Refund => ApiError::new(404, "refund_not_found", "refund intent not found"),
    }
}

/// `amount`: present, a JSON integer (no decimal point), within the site's limits.
pub fn check_amount(site: crate::config::Site, v: Option<&Value>) -> Result<i64, ApiError> {
    let (min, max) = site.amount_limits();
    let bad = || {
        ApiError::new(
            400,
            "invalid_amount",
            format!(
                "amount must be an integer with the two decimals included, from {min} to {max} on {}",
                site.as_str()
            ),
        )
    };
    let a = match v {
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.as_i64().ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if a < min || a > max {
        return Err(bad());
    }
    Ok(a)
}

/// MLB's `payment`: installments ≥ 1, each ≥ 500, `installments_cost` seller or buyer.
pub fn check_mlb_payment(p: &Value, amount: i64) -> Result<(), ApiError> {
    let bad = |m: &str| ApiError::new(400, "invalid_payment", m.to_owned());
    if let Some(n) = p.get("installments") {
        let n = n
            .as_i64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad("installments must be an integer of at least 1"))?;
        if amount / n < 500 || amount < 500 * n {
            return Err(bad("each installment must be at least 500"));
        }
    }
    if let Some(c) = p.get("installments_cost")
        && !matches!(c.as_str(), Some("seller") | Some("buyer"))
    {
        return Err(bad("installments_cost must be seller or buyer"));
    }
    Ok(())
}

/// How the authorization went, from the terminal's side.
pub(crate) enum AuthOutcome {
    Approved,
    Rejected(String),
    /// No answer in time.
    Timeout,
    /// Connection refused or broken, or a 5xx.
    Unavailable,
    /// An answer whose signature does not verify.
    BadSignature,
    /// Any other answer (a 4xx): no decision.
    Refused,
}

/// What `begin` left for the asynchronous part of a presentation.
enum Begun {
    Sale {
        id: String,
        pid: u64,
        amount: i64,
        auth: TxBody,
        offset: i8,
    },
    Refund {
        id: String,
        pid: u64,
        body: TxBody,
    },
    Done(Value),
}

/// How a sale ended: the events from `PROCESSING`, `payment.state`, the payment's status
/// and status detail.
struct Ending {
    events: Vec<Event>,
    payment_state: &'static str,
    status: &'static str,
    detail: String,
}

impl Ending {
    fn finished(payment_state: &'static str, status: &'static str, detail: &str) -> Ending {
        Ending {
            events: vec![Event::Reconciled, Event::End],
            payment_state,
            status,
            detail: detail.into(),
        }
    }
    fn no_status(detail: &str) -> Ending {
        Ending {
            events: vec![Event::NoStatus],
            payment_state: "",
            status: "rejected",
            detail: detail.into(),
        }
    }
}

impl Sim {
    /// `POST /sim/devices/{d}/present` (§2.5, §2.7): fetches first if needed, runs to a final
    /// state, answers with the final intent.
    pub async fn present(
        self: &Arc<Self>,
        client: &awc::Client,
        device_id: &str,
        card: Presentation,
    ) -> Result<Value, ApiError> {
        if card.card_id.is_empty() || card.user_id.is_empty() {
            return Err(ApiError::new(
                400,
                "invalid_presentation",
                "card_id and user_id are required",
            ));
        }
        if !traffic::ENTRY_MODES.contains(&card.entry_mode.as_str()) {
            return Err(ApiError::new(
                400,
                "invalid_presentation",
                "entry_mode must be CHIP, CONTACTLESS or MAG_STRIPE",
            ));
        }
        let device = self.device(device_id)?.clone();
        match self.begin(&device, &card)? {
            Begun::Done(v) => Ok(v),
            Begun::Refund { id, pid, body } => {
                let row = crate::csv::Row::of(&body, "ADJUSTMENT", true);
                let key = format!("pt-refund-{id}");
                let taken = self
                    .followup(client, ADJ_CREDIT, &key, body.to_bytes(), Some(row))
                    .await;
                Ok(self.end_refund(&id, pid, taken != Some(false)))
            }
            Begun::Sale {
                id,
                pid,
                amount,
                auth,
                offset,
            } => {
                let ending = self
                    .run_sale(client, &id, amount, &auth, offset, card.answer_delay_ms)
                    .await;
                Ok(self.end_sale(&id, pid, ending))
            }
        }
    }

    /// Under the lock: fetch if needed, enter `PROCESSING`, assign the payment id and build
    /// the authorization (or check the refund's card).
    fn begin(
        self: &Arc<Self>,
        device: &DeviceConfig,
        card: &Presentation,
    ) -> Result<Begun, ApiError> {
        let mut out = Vec::new();
        let r = {
            let mut m = self.lock();
            self.begin_locked(&mut m, device, card, &mut out)
        };
        self.flush(out);
        r
    }

    fn begin_locked(
        &self,
        m: &mut Model,
        device: &DeviceConfig,
        card: &Presentation,
        out: &mut Outbox,
    ) -> Result<Begun, ApiError> {
        let id = Self::active_on(m, &device.id).ok_or_else(|| {
            ApiError::new(
                404,
                "no_intent",
                "the device has no intent to present a card to",
            )
        })?;
        match m.intents[&id].state {
            State::Open => {
                self.transition(m, &id, Event::Fetch, out)
                    .expect("OPEN fetches");
            }
            State::OnTerminal => {}
            _ => {
                return Err(ApiError::new(
                    409,
                    "device_busy",
                    "the device is processing a card",
                ));
            }
        }
        self.transition(m, &id, Event::Present, out)
            .expect("ON_TERMINAL takes a card");
        let now = now_ms();
        let offset = device.site.utc_offset_hours();
        if m.intents[&id].kind == Kind::Refund {
            let pid = m.intents[&id]
                .payment_id
                .expect("a refund names its payment");
            let p = m.payments.get(&pid).expect("refunds name known payments");
            if p.card_id != card.card_id {
                self.transition(m, &id, Event::Fail, out)
                    .expect("PROCESSING fails");
                return Ok(Begun::Done(Self::refund_view(&m.intents[&id])));
            }
            let body = traffic::credit_adjustment(
                &p.auth,
                &format!("ctx-ptr-{id}"),
                "REFUND",
                &local_date_time(now, offset),
            );
            return Ok(Begun::Refund { id, pid, body });
        }
        let pid = m.next_payment;
        m.next_payment += 1;
        let intent = m.intents.get_mut(&id).expect("exists");
        intent.payment_id = Some(pid);
        intent.payment_type = Some(traffic::payment_type(&card.product_type).into());
        let amount = intent.amount;
        let installments = intent
            .request
            .get("payment")
            .and_then(|p| p.get("installments"))
            .and_then(Value::as_u64)
            .map(|n| n as u32)
            .filter(|_| device.site == crate::config::Site::Mlb);
        let external_reference = intent
            .additional_info
            .get("external_reference")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let auth = traffic::authorization(&traffic::Sale {
            transaction_id: traffic::auth_id(&id),
            device,
            card,
            amount_minor: amount,
            currency: device.site.currency().into(),
            local_date_time: local_date_time(now, offset),
            installments,
        });
        // The PROCESSING notification carries the payment id: rebuild it now that it is set.
        if let Some(last) = out.last_mut()
            && last.0 == id
        {
            last.1 = notification(&m.intents[&id]);
        }
        m.payments.insert(
            pid,
            Payment {
                id: pid,
                intent_id: id.clone(),
                device_id: device.id.clone(),
                amount,
                currency: device.site.currency().into(),
                status: "in_process".into(),
                status_detail: "".into(),
                external_reference,
                date_created: iso(now, offset),
                card_id: card.card_id.clone(),
                user_id: card.user_id.clone(),
                payment_type: traffic::payment_type(&card.product_type).into(),
                refund_id: None,
                auth: auth.clone(),
            },
        );
        Ok(Begun::Sale {
            id,
            pid,
            amount,
            auth,
            offset,
        })
    }

    /// The issuer traffic of §2.5's outcome table, in order.
    async fn run_sale(
        self: &Arc<Self>,
        client: &awc::Client,
        id: &str,
        amount: i64,
        auth: &TxBody,
        offset: i8,
        answer_delay_ms: Option<u64>,
    ) -> Ending {
        let magic =
            Some(amount).filter(|a| self.cfg.magic_amounts && [1100, 1200, 1300].contains(a));
        let adv_key = format!("pt-adv-{id}");
        let advise = |detail: &str| traffic::advice(auth, detail, &adv_key);
        if magic == Some(1200) {
            // A processor-side decline before the issuer: only the advice.
            self.followup(client, NOTIFY, &adv_key, advise("INVALID_PIN"), None)
                .await;
            return Ending::finished("rejected", "rejected", "INVALID_PIN");
        }
        let outcome = self.authorize(client, auth, id, answer_delay_ms).await;
        let approved = matches!(outcome, AuthOutcome::Approved);
        let csv = vec![crate::csv::Row::of(
            auth,
            "AUTHORIZATION",
            approved && magic != Some(1300),
        )];
        let ending = match (outcome, magic) {
            (AuthOutcome::Timeout, _) => Ending::no_status("CLIENT_TIMEOUT"),
            (AuthOutcome::Unavailable, _) => Ending::no_status("CLIENT_UNAVAILABLE"),
            (AuthOutcome::BadSignature, _) => {
                Ending::finished("rejected", "rejected", "CLIENT_SIGNATURE_ERROR")
            }
            (AuthOutcome::Refused, _) => {
                Ending::finished("rejected", "rejected", "INVALID_TRANSACTION")
            }
            (_, Some(1300)) => Ending {
                events: vec![Event::Fail],
                payment_state: "",
                status: "rejected",
                detail: "INTERNAL_ERROR".into(),
            },
            (AuthOutcome::Approved, Some(1100)) => {
                let rev = traffic::credit_adjustment(
                    auth,
                    &format!("{}-rev", auth.transaction.id),
                    "REVERSAL_PURCHASE",
                    &local_date_time(now_ms(), offset),
                );
                let row = crate::csv::Row::of(&rev, "ADJUSTMENT", true);
                let key = format!("pt-rev-{id}");
                let taken = self
                    .followup(client, ADJ_CREDIT, &key, rev.to_bytes(), Some(row))
                    .await;
                if taken == Some(false) {
                    // The reversal was refused for good: the money stays taken, and the
                    // payment says so (the reconciliation shows the refused reversal).
                    Ending::finished("approved", "approved", "APPROVED")
                } else {
                    Ending::finished("reversed", "cancelled", "REVERSED")
                }
            }
            (AuthOutcome::Approved, _) => Ending::finished("approved", "approved", "APPROVED"),
            (AuthOutcome::Rejected(d), _) => Ending::finished("rejected", "rejected", &d),
        };
        // A rejection, ours or the processor's, is followed by its advice.
        if ending.status == "rejected" {
            self.followup(client, NOTIFY, &adv_key, advise(&ending.detail), None)
                .await;
        }
        self.record_csv(&csv);
        ending
    }

    /// Under the lock: the sale's final states and its payment.
    fn end_sale(self: &Arc<Self>, id: &str, pid: u64, e: Ending) -> Value {
        let mut out = Vec::new();
        let v = {
            let mut m = self.lock();
            let intent = m.intents.get_mut(id).expect("exists");
            intent.payment_state = Some(e.payment_state.into());
            if e.events == [Event::NoStatus] {
                intent.payment_type = Some(String::new());
            }
            let p = m.payments.get_mut(&pid).expect("exists");
            p.status = e.status.into();
            p.status_detail = e.detail;
            for ev in e.events {
                self.transition(&mut m, id, ev, &mut out)
                    .expect("the engine follows the machine");
            }
            self.intent_view(&m, &m.intents[id])
        };
        self.flush(out);
        v
    }

    /// Under the lock: the refund's final state, and its payment refunded when it was taken.
    fn end_refund(self: &Arc<Self>, id: &str, pid: u64, taken: bool) -> Value {
        let mut out = Vec::new();
        let v = {
            let mut m = self.lock();
            let ev = if taken {
                let p = m.payments.get_mut(&pid).expect("exists");
                p.status = "refunded".into();
                p.status_detail = "REFUNDED".into();
                m.intents.get_mut(id).expect("exists").payment_state = Some("refunded".into());
                Event::End
            } else {
                Event::Fail
            };
            self.transition(&mut m, id, ev, &mut out)
                .expect("PROCESSING ends");
            Self::refund_view(&m.intents[id])
        };
        self.flush(out);
        v
    }

    /// Sends the authorization, waiting at most `authorization_timeout_ms` for the answer. A
    /// late answer is discarded: the request is not cancelled.
    pub(crate) async fn authorize(
        &self,
        client: &awc::Client,
        auth: &TxBody,
        intent_id: &str,
        answer_delay_ms: Option<u64>,
    ) -> AuthOutcome {
        let signer = self.signer.clone();
        let c = client.clone();
        let key = format!("pt-auth-{intent_id}");
        let body = Bytes::from(auth.to_bytes());
        let task = actix_rt::spawn(async move {
            let r = signer.post(&c, AUTH_DEBIT, &key, body).await;
            if let Some(d) = answer_delay_ms {
                actix_rt::time::sleep(Duration::from_millis(d)).await;
            }
            r
        });
        let r = match actix_rt::time::timeout(
            Duration::from_millis(self.cfg.authorization_timeout_ms),
            task,
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Failure::Unavailable),
            Err(_) => Err(Failure::Timeout),
        };
        self.stats.count_processor(AUTH_DEBIT, &r);
        match r {
            Err(Failure::Timeout) => AuthOutcome::Timeout,
            Err(Failure::Unavailable) => AuthOutcome::Unavailable,
            Ok(a) if a.status >= 500 => AuthOutcome::Unavailable,
            Ok(a) if !a.signature_ok => AuthOutcome::BadSignature,
            Ok(a) if a.status != 200 => AuthOutcome::Refused,
            Ok(a) => {
                let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                match v["status"].as_str() {
                    Some("APPROVED") => AuthOutcome::Approved,
                    Some("REJECTED") => AuthOutcome::Rejected(
                        v["status_detail"].as_str().unwrap_or("OTHER").to_owned(),
                    ),
                    _ => AuthOutcome::Refused,
                }
            }
        }
    }

    /// Sends a follow-up (advice, reversal, refund) until the authorizer takes it, in the
    /// background; waits for it at most `followup_wait_ms`. `Some(true)`: taken;
    /// `Some(false)`: refused for good; `None`: still being retried. `row`, an adjustment's
    /// line of the transactions CSV, is written when the authorizer has settled it, as
    /// `APPROVED` only when it was taken (the processor's file says what it made effective).
    pub(crate) async fn followup(
        self: &Arc<Self>,
        client: &awc::Client,
        path: &'static str,
        key: &str,
        body: Vec<u8>,
        row: Option<crate::csv::Row>,
    ) -> Option<bool> {
        let sim = self.clone();
        let c = client.clone();
        let key = key.to_owned();
        inc(&self.stats.followups_pending);
        let task = actix_rt::spawn(async move {
            let r = sim
                .signer
                .until_taken(&c, path, &key, Bytes::from(body), &sim.stats)
                .await;
            if r.is_err() {
                inc(&sim.stats.followups_refused);
            }
            if let Some(mut row) = row {
                row.approved = r.is_ok();
                sim.record_csv(&[row]);
            }
            // Not pending once its line is written.
            sim.stats
                .followups_pending
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            r.is_ok()
        });
        // A task that did not finish (the simulator stopping) settled nothing.
        actix_rt::time::timeout(Duration::from_millis(self.cfg.followup_wait_ms), task)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// A clock for tests and the local time of the sweeper.
pub fn signer_for(cfg: &Config) -> anyhow::Result<Signer> {
    let c = cfg.credentials()?;
    Ok(signed::Signer {
        base: cfg.authorizer_url.trim_end_matches('/').to_owned(),
        api_key: c.api_key,
        secret: c.secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Site;

    fn sim() -> Arc<Sim> {
        let mut cfg = Config {
            devices: vec![crate::config::demo_device()],
            ..Config::default()
        };
        let mut mlb = crate::config::demo_device();
        mlb.id = "DEV__MLB".into();
        mlb.site = Site::Mlb;
        cfg.devices.push(mlb);
        let mut off = crate::config::demo_device();
        off.id = "DEV__OFF".into();
        off.operating_mode = OperatingMode::Standalone;
        cfg.devices.push(off);
        let signer = Signer {
            base: "http://127.0.0.1:9".into(),
            api_key: "k".into(),
            secret: protocol::ApiSecret::from_bytes(vec![1; 32]),
        };
        Arc::new(Sim::new(cfg, signer).unwrap())
    }

    const DEV: &str = "INGENICO_MOVE2500__ING-ARG-14886780";

    #[test]
    fn amount_rules_per_site() {
        for (site, min, max) in [
            (Site::Mla, 500, 400_000_000),
            (Site::Mlb, 100, 7_000_000),
            (Site::Mlm, 500, 35_000_000),
        ] {
            assert_eq!(check_amount(site, Some(&json!(min))), Ok(min));
            assert_eq!(check_amount(site, Some(&json!(max))), Ok(max));
            for bad in [
                json!(min - 1),
                json!(max + 1),
                json!(12.34),
                json!(1500.0),
                json!("1500"),
                Value::Null,
            ] {
                assert_eq!(
                    check_amount(site, Some(&bad)).unwrap_err().code,
                    "invalid_amount",
                    "{site:?} {bad}"
                );
            }
            assert!(check_amount(site, None).is_err());
        }
    }

    #[test]
    fn mlb_payment_rules() {
        assert!(
            check_mlb_payment(
                &json!({"installments": 3, "installments_cost": "buyer"}),
                1500
            )
            .is_ok()
        );
        assert!(check_mlb_payment(&json!({"type": "credit_card"}), 100).is_ok());
        for (p, amount) in [
            (json!({"installments": 0}), 1500),
            (json!({"installments": 4}), 1500),
            (json!({"installments": "2"}), 1500),
            (json!({"installments_cost": "bank"}), 1500),
        ] {
            assert_eq!(
                check_mlb_payment(&p, amount).unwrap_err().code,
                "invalid_payment",
                "{p}"
            );
        }
    }

    #[actix_rt::test]
    async fn api_rules() {
        let s = sim();
        let body = json!({"amount": 1500, "additional_info": {"external_reference": "r1", "print_on_terminal": true, "ticket_number": "S1"}});
        assert_eq!(
            s.create_intent("nope", &body).unwrap_err().code,
            "device_not_found"
        );
        assert_eq!(
            s.create_intent("DEV__OFF", &body).unwrap_err().code,
            "device_not_in_pdv_mode"
        );
        let i = s.create_intent(DEV, &body).unwrap();
        assert_eq!(i["device_id"], DEV);
        assert_eq!(i["amount"], 1500);
        let id = i["id"].as_str().unwrap().to_owned();
        assert_eq!(s.create_intent(DEV, &body).unwrap_err().code, "device_busy");
        // A field of another site is echoed.
        let mlb = s
            .create_intent(
                "DEV__MLB",
                &json!({"amount": 1500, "additional_info": {"ticket_number": "T"}}),
            )
            .unwrap();
        assert_eq!(mlb["additional_info"]["ticket_number"], "T");
        // DELETE while OPEN, then again (final): 409.
        assert_eq!(
            s.api_cancel(DEV, &id, Kind::Payment).unwrap()["id"],
            id.as_str()
        );
        assert_eq!(
            s.api_cancel(DEV, &id, Kind::Payment).unwrap_err().code,
            "intent_not_cancelable"
        );
        assert_eq!(
            s.api_cancel(DEV, "unknown", Kind::Payment)
                .unwrap_err()
                .code,
            "payment_intent_not_found"
        );
        // After a fetch, DELETE is refused; the device cancels.
        let id2 = s.create_intent(DEV, &body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(s.fetch(DEV).unwrap()["state"], "ON_TERMINAL");
        assert_eq!(s.fetch(DEV).unwrap_err().code, "no_open_intent");
        assert_eq!(
            s.api_cancel(DEV, &id2, Kind::Payment).unwrap_err().code,
            "intent_not_cancelable"
        );
        assert_eq!(s.device_cancel(DEV).unwrap()["state"], "CANCELED");
        assert_eq!(
            s.device_cancel(DEV).unwrap_err().code,
            "intent_not_cancelable"
        );
        // Refunds of unknown payments are refused.
        assert_eq!(
            s.create_refund(DEV, &json!({"payment_id": 10000000001u64}))
                .unwrap_err()
                .code,
            "refund_not_allowed"
        );
        // Modes.
        assert_eq!(
            s.set_mode(DEV, &json!({"operating_mode": "X"}))
                .unwrap_err()
                .code,
            "invalid_operating_mode"
        );
        s.set_mode(DEV, &json!({"operating_mode": "STANDALONE"}))
            .unwrap();
        assert_eq!(
            s.create_intent(DEV, &body).unwrap_err().code,
            "device_not_in_pdv_mode"
        );
    }

    #[actix_rt::test]
    async fn the_sweeper_abandons_idle_intents() {
        let s = sim();
        let id = s.create_intent(DEV, &json!({"amount": 1500})).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        s.sweep();
        assert_eq!(s.lock().intents[&id].state, State::Open);
        s.lock().intents.get_mut(&id).unwrap().changed_ms -= 900_000;
        s.sweep();
        assert_eq!(s.lock().intents[&id].state, State::Abandoned);
        // No validated webhook: the ABANDONED notification was dropped and counted.
        assert_eq!(s.stats.snapshot().dropped_unvalidated, 1);
    }

    #[test]
    fn notification_bodies() {
        let mut i = Intent {
            id: "7d8c70b6-2ac8-4c57-a441-c319088ca3ca".into(),
            kind: Kind::Payment,
            device_id: DEV.into(),
            state: State::Finished,
            created_ms: 1_629_660_254_000,
            changed_ms: 0,
            amount: 1400,
            request: Map::new(),
            additional_info: json!({"external_reference": "3cc6b09c-eb77-4812-899e-4ff003cd21ed", "print_on_terminal": true}),
            payment_id: Some(18308029193),
            payment_state: Some("approved".into()),
            payment_type: Some("credit_card".into()),
            history: vec![],
        };
        assert_eq!(
            String::from_utf8(notification(&i)).unwrap(),
            r#"{"id":"7d8c70b6-2ac8-4c57-a441-c319088ca3ca","created_at":"2021-08-22 19:24:14","amount":1400,"payment":{"id":18308029193,"type":"credit_card","state":"approved"},"additional_info":{"external_reference":"3cc6b09c-eb77-4812-899e-4ff003cd21ed"},"state":"FINISHED","caller_id":1,"client_id":1}"#
        );
        i.state = State::ConfirmationRequired;
        let v: Value = serde_json::from_slice(&notification(&i)).unwrap();
        assert_eq!(
            v["payment"],
            json!({"id": 18308029193u64, "type": "", "state": ""})
        );
        for s in [State::Canceled, State::Error, State::Abandoned] {
            i.state = s;
            let v: Value = serde_json::from_slice(&notification(&i)).unwrap();
            assert!(v.get("payment").is_none(), "{s:?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(utc_seconds(1_704_114_000_000), "2024-01-01 13:00:00");
        assert_eq!(
            local_date_time(1_704_114_000_000, -3),
            "2024-01-01T10:00:00"
        );
        assert_eq!(iso(1_704_114_000_123, -3), "2024-01-01T10:00:00.123-03:00");
        assert_eq!(iso(1_704_114_000_123, 0), "2024-01-01T13:00:00.123Z");
    }
}
