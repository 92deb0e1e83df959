//! The wrapper's world in memory, and every rule of spec §1.5-§1.8 as pure functions of it
//! and of `now_ms`. No I/O happens here: an operation that must reach the authorizer returns
//! the [`Call`]s to make, and the caller ([`crate::server`]) makes them.

use crate::amount::{format_minor, parse_minor};
use crate::config::Config;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// V15: idempotency keys are kept at least 24 h.
pub const IDEMPOTENCY_KEEP_MS: i64 = 24 * 3600 * 1000;
/// The `pollDelayInMs` of payment details.
pub const POLL_DELAY_MS: u64 = 1000;

/// The 11 payment statuses (§1.5, C2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    Initiated,
    Prepared,
    Paired,
    IssuedToUser,
    Reserved,
    Captured,
    CancelledByUser,
    CancelledByClient,
    CancelledByMobilePay,
    ExpiredAndCancelled,
    RejectedByMobilePayDueToAgeRestrictions,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 11] = [
        PaymentStatus::Initiated,
        PaymentStatus::Prepared,
        PaymentStatus::Paired,
        PaymentStatus::IssuedToUser,
        PaymentStatus::Reserved,
        PaymentStatus::Captured,
        PaymentStatus::CancelledByUser,
        PaymentStatus::CancelledByClient,
        PaymentStatus::CancelledByMobilePay,
        PaymentStatus::ExpiredAndCancelled,
        PaymentStatus::RejectedByMobilePayDueToAgeRestrictions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Initiated => "Initiated",
            PaymentStatus::Prepared => "Prepared",
            PaymentStatus::Paired => "Paired",
            PaymentStatus::IssuedToUser => "IssuedToUser",
            PaymentStatus::Reserved => "Reserved",
            PaymentStatus::Captured => "Captured",
            PaymentStatus::CancelledByUser => "CancelledByUser",
            PaymentStatus::CancelledByClient => "CancelledByClient",
            PaymentStatus::CancelledByMobilePay => "CancelledByMobilePay",
            PaymentStatus::ExpiredAndCancelled => "ExpiredAndCancelled",
            PaymentStatus::RejectedByMobilePayDueToAgeRestrictions => {
                "RejectedByMobilePayDueToAgeRestrictions"
            }
        }
    }

    /// Case-insensitive, as query strings are typed by hand.
    pub fn parse(s: &str) -> Option<PaymentStatus> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// V2: the states that block a new payment on the same PoS (C1: `Reserved` does not).
    pub fn blocks_pos(self) -> bool {
        matches!(
            self,
            PaymentStatus::Initiated
                | PaymentStatus::Prepared
                | PaymentStatus::Paired
                | PaymentStatus::IssuedToUser
        )
    }

    /// `Captured`, every `Cancelled…`, `Expired…` and `Rejected…` (§1.5).
    pub fn is_final(self) -> bool {
        !self.blocks_pos() && self != PaymentStatus::Reserved
    }
}

/// Refund statuses (§1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Initiated,
    Reserved,
    Captured,
    CancelledByClient,
    CancelledByMobilePay,
    ExpiredAndCaptured,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Initiated => "Initiated",
            RefundStatus::Reserved => "Reserved",
            RefundStatus::Captured => "Captured",
            RefundStatus::CancelledByClient => "CancelledByClient",
            RefundStatus::CancelledByMobilePay => "CancelledByMobilePay",
            RefundStatus::ExpiredAndCaptured => "ExpiredAndCaptured",
        }
    }
    /// Counts against the captured amount (V12, pending ones included).
    pub fn counts(self) -> bool {
        !matches!(
            self,
            RefundStatus::CancelledByClient | RefundStatus::CancelledByMobilePay
        )
    }
    /// The money has reached the customer.
    pub fn is_captured(self) -> bool {
        matches!(
            self,
            RefundStatus::Captured | RefundStatus::ExpiredAndCaptured
        )
    }
}

/// A refused operation: the HTTP status, the v10 code (or the rule's name where v10 has none)
/// and the text. Rendered as `{"success":false,"message","errors":["<code>: <text>"]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl SimError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> SimError {
        SimError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
    pub fn unauthorized() -> SimError {
        SimError::new(401, "401", "accessToken or bioCode is wrong or missing")
    }
    pub fn not_found(what: &str) -> SimError {
        SimError::new(404, "404", format!("{what} not found"))
    }
    pub fn bad(field: &str) -> SimError {
        SimError::new(400, "400", format!("{field} is missing or invalid"))
    }
    pub fn bad_amount() -> SimError {
        SimError::new(
            400,
            "1102",
            "amount must be greater than 0 with at most 2 decimals",
        )
    }
    pub fn body(&self) -> Value {
        json!({
            "success": false,
            "message": self.message,
            "errors": [format!("{}: {}", self.code, self.message)],
        })
    }
}

pub type SimResult<T> = Result<T, SimError>;

/// A call the simulator owes the authorizer (§2.5 event mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Customer approved: `POST /channels/v1/reservations`.
    Reserve(ReserveCall),
    /// `POST …/{paymentId}/capture`.
    Capture {
        payment_id: String,
        amount_minor: i64,
    },
    /// `POST …/{paymentId}/cancel`.
    Cancel { payment_id: String },
    /// `POST …/{paymentId}/refunds`.
    Refund {
        payment_id: String,
        refund_id: String,
        amount_minor: i64,
        currency: String,
    },
}

impl Call {
    /// The channel path, also the signed `X-Endpoint`.
    pub fn path(&self) -> String {
        match self {
            Call::Reserve(_) => "/channels/v1/reservations".into(),
            Call::Capture { payment_id, .. } => {
                format!("/channels/v1/reservations/{payment_id}/capture")
            }
            Call::Cancel { payment_id } => format!("/channels/v1/reservations/{payment_id}/cancel"),
            Call::Refund { payment_id, .. } => {
                format!("/channels/v1/reservations/{payment_id}/refunds")
            }
        }
    }

    /// `x-idempotency-key`: one per logical call, the same on every retry. Payment and refund
    /// ids are ours and unique, so the key is derived from them.
    pub fn idempotency_key(&self) -> String {
        match self {
            Call::Reserve(r) => format!("mp-res-{}", r.reservation_id),
            Call::Capture { payment_id, .. } => format!("mp-cap-{payment_id}"),
            Call::Cancel { payment_id } => format!("mp-can-{payment_id}"),
            Call::Refund { refund_id, .. } => format!("mp-ref-{refund_id}"),
        }
    }

    /// The exact body bytes, one line, no trailing newline.
    pub fn body(&self) -> Vec<u8> {
        let v = match self {
            Call::Reserve(r) => {
                let mut v = json!({
                    "reservation_id": r.reservation_id,
                    "user_id": r.user_id,
                });
                let o = v.as_object_mut().expect("object");
                if let Some(c) = &r.card_id {
                    o.insert("card_id".into(), json!(c));
                }
                o.insert("amount".into(), json!(format_minor(r.amount_minor)));
                o.insert("currency".into(), json!(r.currency));
                o.insert(
                    "merchant".into(),
                    json!({"id": r.merchant_id, "name": r.merchant_name, "mcc": r.mcc}),
                );
                o.insert("expires_in_secs".into(), json!(r.expires_in_secs));
                o.insert(
                    "partial_capture_possible".into(),
                    json!(r.partial_capture_possible),
                );
                o.insert("reference".into(), json!(r.reference));
                v
            }
            Call::Capture { amount_minor, .. } => json!({"amount": format_minor(*amount_minor)}),
            Call::Cancel { .. } => json!({}),
            Call::Refund {
                refund_id,
                amount_minor,
                currency,
                ..
            } => {
                json!({"refund_id": refund_id, "amount": format_minor(*amount_minor), "currency": currency})
            }
        };
        v.to_string().into_bytes()
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Call::Reserve(_) => "reserve",
            Call::Capture { .. } => "capture",
            Call::Cancel { .. } => "cancel",
            Call::Refund { .. } => "refund",
        }
    }

    pub fn payment_id(&self) -> &str {
        match self {
            Call::Reserve(r) => &r.reservation_id,
            Call::Capture { payment_id, .. }
            | Call::Cancel { payment_id }
            | Call::Refund { payment_id, .. } => payment_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveCall {
    pub reservation_id: String,
    pub user_id: String,
    pub card_id: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub mcc: String,
    pub expires_in_secs: u64,
    pub partial_capture_possible: bool,
    pub reference: String,
}

/// A customer's check-in at a PoS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckIn {
    pub user_id: String,
    pub card_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Merchant {
    pub bio_code: String,
    pub name: String,
    pub access_token: Option<String>,
    /// storeId -> name, in configuration order.
    pub stores: Vec<(String, String)>,
}

impl Merchant {
    /// Gives the merchant a fresh access token (S7); the answer that tells it.
    fn new_token(&mut self) -> Value {
        let token = format!("{}{}", guid().replace('-', ""), guid().replace('-', ""));
        self.access_token = Some(token.clone());
        json!({ "accessToken": token })
    }
}

#[derive(Debug, Clone)]
pub struct Terminal {
    pub terminal_id: String,
    pub bio_code: String,
    pub store_id: String,
    pub currency: String,
    pub mcc: String,
    pub pos_id: Option<String>,
    pub checkin: Option<CheckIn>,
    /// The latest payment created on this PoS: the only one that can block it (S1 keeps a
    /// second from being created while it does).
    pub last_payment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub payment_id: String,
    pub bio_code: String,
    pub order_id: String,
    pub terminal_id: String,
    pub pos_id: String,
    pub amount_minor: Option<i64>,
    pub currency: String,
    pub status: PaymentStatus,
    /// Created by `prepare` (S2, V3).
    pub prepared: bool,
    pub partial_capture_possible: bool,
    pub checkin: Option<CheckIn>,
    pub created_ms: i64,
    pub last_activity_ms: i64,
    /// When our reservation was asked for; the sim's own expiry counts from here, so it never
    /// runs after the authorizer's.
    pub reserved_at_ms: Option<i64>,
    pub captured_minor: Option<i64>,
    pub captured_at_ms: Option<i64>,
    /// An approval's reserve call is in flight.
    pub approving: bool,
    /// Why MobilePay cancelled it (`INSUFFICIENT_FUNDS`, `inactivity`, `no_answer`, ...).
    pub reason: Option<String>,
    pub refund_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Refund {
    pub refund_id: String,
    pub payment_id: String,
    pub refund_order_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: RefundStatus,
    pub created_ms: i64,
}

impl Refund {
    /// The answer to a refund's capture or cancel: its id and status.
    fn answer(&self) -> Value {
        json!({"refundId": self.refund_id, "status": self.status.as_str()})
    }
}

#[derive(Debug, Clone)]
struct IdemEntry {
    fingerprint: String,
    resource_id: String,
    at_ms: i64,
}

/// The timing rules, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub reservation_expiry_ms: i64,
    pub refund_auto_capture_ms: i64,
    pub refund_window_ms: i64,
    pub inactivity_ms: i64,
    pub partial_capture_possible: bool,
    pub expires_in_secs: u64,
}

impl Rules {
    pub fn from_config(c: &Config) -> Rules {
        Rules {
            reservation_expiry_ms: secs_ms(c.reservation_expiry_secs),
            refund_auto_capture_ms: secs_ms(c.refund_auto_capture_secs),
            refund_window_ms: secs_ms(c.refund_window_days.saturating_mul(86_400)),
            inactivity_ms: secs_ms(c.inactivity_cancel_secs),
            partial_capture_possible: c.partial_capture_possible,
            expires_in_secs: c.reservation_expiry_secs,
        }
    }
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Where a payment starts: by `terminalId` or by `posId`.
#[derive(Debug, Clone, Copy)]
pub enum PosRef<'a> {
    Terminal(&'a str),
    Pos(&'a str),
}

/// The whole wrapper: merchants, terminals and PoS, check-ins, payments, refunds, keys.
pub struct World {
    pub rules: Rules,
    merchants: BTreeMap<String, Merchant>,
    terminals: BTreeMap<String, Terminal>,
    /// posId -> terminalId.
    poses: HashMap<String, String>,
    payments: HashMap<String, Payment>,
    refunds: HashMap<String, Refund>,
    /// (bioCode, key) -> the resource it created.
    idem: HashMap<(String, String), IdemEntry>,
    ids: Box<dyn FnMut() -> String + Send>,
    /// Calls owed to the authorizer, drained by the server after every operation.
    owed: Vec<Call>,
}

/// A fresh GUID (v4 layout) from the OS's randomness.
pub fn guid() -> String {
    processor_client::support::uuid_v4()
}

impl World {
    pub fn new(cfg: &Config) -> World {
        Self::with_ids(cfg, Box::new(guid))
    }

    /// With a chosen id source (tests use a counter).
    pub fn with_ids(cfg: &Config, ids: Box<dyn FnMut() -> String + Send>) -> World {
        let mut w = World {
            rules: Rules::from_config(cfg),
            merchants: BTreeMap::new(),
            terminals: BTreeMap::new(),
            poses: HashMap::new(),
            payments: HashMap::new(),
            refunds: HashMap::new(),
            idem: HashMap::new(),
            ids,
            owed: Vec::new(),
        };
        for m in &cfg.merchants {
            w.merchants.insert(
                m.bio_code.clone(),
                Merchant {
                    bio_code: m.bio_code.clone(),
                    name: if m.name.is_empty() {
                        m.stores
                            .first()
                            .map(|s| s.name.clone())
                            .unwrap_or_else(|| m.bio_code.clone())
                    } else {
                        m.name.clone()
                    },
                    access_token: (!m.access_token.is_empty()).then(|| m.access_token.clone()),
                    stores: m
                        .stores
                        .iter()
                        .map(|s| (s.store_id.clone(), s.name.clone()))
                        .collect(),
                },
            );
            for t in &m.terminals {
                let pos_id = (!t.pos_id.is_empty()).then(|| t.pos_id.clone());
                if let Some(p) = &pos_id {
                    w.poses.insert(p.clone(), t.terminal_id.clone());
                }
                w.terminals.insert(
                    t.terminal_id.clone(),
                    Terminal {
                        terminal_id: t.terminal_id.clone(),
                        bio_code: m.bio_code.clone(),
                        store_id: t.store_id.clone(),
                        currency: t.currency.clone(),
                        mcc: t.mcc.clone(),
                        pos_id,
                        checkin: None,
                        last_payment: None,
                    },
                );
            }
        }
        w
    }

    /// The calls owed to the authorizer since the last drain, in order.
    pub fn take_owed(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.owed)
    }

    // ----- credentials -------------------------------------------------------------------

    /// 401 unless `bioCode` names a merchant whose token is set and equals `accessToken`.
    pub fn authenticate(&self, bio_code: Option<&str>, token: Option<&str>) -> SimResult<()> {
        let (Some(bio), Some(token)) = (bio_code, token) else {
            return Err(SimError::unauthorized());
        };
        match self
            .merchants
            .get(bio)
            .and_then(|m| m.access_token.as_deref())
        {
            Some(t) if !token.is_empty() && constant_eq(t.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(SimError::unauthorized()),
        }
    }

    /// The merchant whose token this is (the `/sim` routes' Bearer).
    pub fn merchant_of_token(&self, token: &str) -> Option<String> {
        self.merchants
            .values()
            .find(|m| {
                m.access_token
                    .as_deref()
                    .is_some_and(|t| constant_eq(t.as_bytes(), token.as_bytes()))
            })
            .map(|m| m.bio_code.clone())
    }

    /// S7: `manage/token` creates the token only when none exists.
    pub fn create_token(&mut self, bio_code: Option<&str>) -> SimResult<Value> {
        let m = bio_code
            .and_then(|b| self.merchants.get_mut(b))
            .ok_or_else(SimError::unauthorized)?;
        if m.access_token.is_some() {
            return Err(SimError::new(409, "S7", "token exists"));
        }
        Ok(m.new_token())
    }

    /// S7: `token/reset` needs `previousAccessToken`, and it must be the current one.
    pub fn reset_token(
        &mut self,
        bio_code: Option<&str>,
        previous: Option<&str>,
    ) -> SimResult<Value> {
        let previous = previous
            .filter(|p| !p.is_empty())
            .ok_or_else(|| SimError::new(400, "S7", "previousAccessToken is required"))?;
        self.authenticate(bio_code, Some(previous))?;
        let m = self
            .merchants
            .get_mut(bio_code.unwrap_or_default())
            .ok_or_else(SimError::unauthorized)?;
        Ok(m.new_token())
    }

    // ----- management (§1.4) -------------------------------------------------------------

    fn terminal_of(&self, bio: &str, terminal_id: Option<&str>) -> SimResult<&Terminal> {
        let id = terminal_id
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SimError::bad("terminalId"))?;
        self.terminals
            .get(id)
            .filter(|t| t.bio_code == bio)
            .ok_or_else(|| SimError::not_found("terminal"))
    }

    fn terminal_id_of(&self, bio: &str, at: PosRef<'_>) -> SimResult<String> {
        match at {
            PosRef::Terminal(t) => {
                let t = self.terminal_of(bio, Some(t))?;
                if t.pos_id.is_none() {
                    return Err(SimError::not_found("PoS of the terminal"));
                }
                Ok(t.terminal_id.clone())
            }
            PosRef::Pos(p) => {
                if p.is_empty() {
                    return Err(SimError::bad("posId"));
                }
                self.poses
                    .get(p)
                    .filter(|t| self.terminals[*t].bio_code == bio)
                    .cloned()
                    .ok_or_else(|| SimError::not_found("PoS"))
            }
        }
    }

    /// S8: a PoS is created only on a terminal without one.
    pub fn create_pos(&mut self, bio: &str, terminal_id: Option<&str>) -> SimResult<Value> {
        let tid = self.terminal_of(bio, terminal_id)?.terminal_id.clone();
        if self.terminals[&tid].pos_id.is_some() {
            return Err(SimError::new(409, "S8", "PoS exists"));
        }
        let pos_id = (self.ids)();
        self.poses.insert(pos_id.clone(), tid.clone());
        self.set_pos(&tid, Some(pos_id.clone()));
        Ok(json!({ "posId": pos_id }))
    }

    /// Deletes a terminal's PoS. A PoS with a blocking payment is refused (the payment must
    /// be cancelled first, S5): deleting it would strand the customer.
    pub fn delete_pos(
        &mut self,
        bio: &str,
        terminal_id: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let tid = self.terminal_of(bio, terminal_id)?.terminal_id.clone();
        let Some(pos_id) = self.terminals[&tid].pos_id.clone() else {
            return Err(SimError::not_found("PoS of the terminal"));
        };
        if let Some(p) = self.blocking_payment(&tid, now) {
            return Err(SimError::new(
                409,
                "1301",
                format!("payment {p} is active on the PoS; cancel it first"),
            ));
        }
        self.poses.remove(&pos_id);
        self.set_pos(&tid, None);
        Ok(json!({ "posId": pos_id }))
    }

    /// A terminal's PoS created or deleted: no check-in or payment of the old one stays.
    fn set_pos(&mut self, tid: &str, pos_id: Option<String>) {
        let t = self.terminals.get_mut(tid).expect("terminal");
        t.pos_id = pos_id;
        t.checkin = None;
        t.last_payment = None;
    }

    pub fn terminal_information(&self, bio: &str, terminal_id: Option<&str>) -> SimResult<Value> {
        let t = self.terminal_of(bio, terminal_id)?;
        Ok(json!({"terminalId": t.terminal_id, "posId": t.pos_id, "storeId": t.store_id}))
    }

    pub fn stores(&self, bio: &str) -> SimResult<Value> {
        let m = self.merchants.get(bio).ok_or_else(SimError::unauthorized)?;
        let ids: Vec<&str> = m.stores.iter().map(|(id, _)| id.as_str()).collect();
        Ok(json!({ "storeIds": ids }))
    }

    pub fn store(&self, bio: &str, store_id: Option<&str>) -> SimResult<Value> {
        let id = store_id.ok_or_else(|| SimError::bad("storeId"))?;
        let m = self.merchants.get(bio).ok_or_else(SimError::unauthorized)?;
        let (id, name) = m
            .stores
            .iter()
            .find(|(s, _)| s == id)
            .ok_or_else(|| SimError::not_found("store"))?;
        Ok(json!({"storeId": id, "name": name}))
    }

    pub fn checkin_status(&self, bio: &str, at: PosRef<'_>) -> SimResult<Value> {
        let tid = self.terminal_id_of(bio, at)?;
        let c = &self.terminals[&tid].checkin;
        Ok(json!({
            "checkedIn": c.is_some(),
            "userId": c.as_ref().map(|c| c.user_id.clone()),
        }))
    }

    /// The text behind the QR code: `mobilepay://checkin?posId=<posId>`.
    pub fn qr_text(&self, terminal_id: &str) -> SimResult<String> {
        let t = self
            .terminals
            .get(terminal_id)
            .ok_or_else(|| SimError::not_found("terminal"))?;
        let pos = t
            .pos_id
            .as_ref()
            .ok_or_else(|| SimError::not_found("PoS of the terminal"))?;
        Ok(format!("mobilepay://checkin?posId={pos}"))
    }

    /// `terminal/qrcode`: the link; the terminal must have a PoS to be checked in at.
    pub fn qr_code(&self, bio: &str, terminal_id: Option<&str>, base: &str) -> SimResult<Value> {
        let t = self.terminal_of(bio, terminal_id)?;
        if t.pos_id.is_none() {
            return Err(SimError::not_found("PoS of the terminal"));
        }
        Ok(json!({ "qrCodeUrl": format!("{base}/sim/qr/{}", t.terminal_id) }))
    }

    // ----- timers --------------------------------------------------------------------------

    /// Applies the payment timers due at `now`: inactivity cancels a waiting payment
    /// (`CancelledByMobilePay`), V1 expires a `Reserved` one (`ExpiredAndCancelled`, no call:
    /// the authorizer's own expiry releases the hold). Returns whether anything changed.
    pub fn tick_payment(&mut self, payment_id: &str, now: i64) -> bool {
        let rules = self.rules;
        let Some(p) = self.payments.get_mut(payment_id) else {
            return false;
        };
        if p.approving {
            return false;
        }
        if p.status.blocks_pos() && now >= p.last_activity_ms.saturating_add(rules.inactivity_ms) {
            p.status = PaymentStatus::CancelledByMobilePay;
            p.reason = Some("inactivity".into());
            let (tid, pid) = (p.terminal_id.clone(), p.payment_id.clone());
            self.release_checkin(&tid, &pid);
            return true;
        }
        if p.status == PaymentStatus::Reserved
            && p.reserved_at_ms
                .is_some_and(|r| now >= r.saturating_add(rules.reservation_expiry_ms))
        {
            p.status = PaymentStatus::ExpiredAndCancelled;
            return true;
        }
        false
    }

    /// Auto-capture of a refund reservation after `refund_auto_capture_secs`
    /// (`ExpiredAndCaptured`), which owes the authorizer the refund.
    pub fn tick_refund(&mut self, refund_id: &str, now: i64) {
        let ms = self.rules.refund_auto_capture_ms;
        let Some(r) = self.refunds.get_mut(refund_id) else {
            return;
        };
        if matches!(r.status, RefundStatus::Initiated | RefundStatus::Reserved)
            && now >= r.created_ms.saturating_add(ms)
        {
            r.status = RefundStatus::ExpiredAndCaptured;
            let call = refund_call(r);
            self.owed.push(call);
        }
    }

    /// Every timer due at `now` (the calls they owe are queued).
    pub fn tick(&mut self, now: i64) {
        let ids: Vec<String> = self
            .payments
            .values()
            .filter(|p| p.status.blocks_pos() || p.status == PaymentStatus::Reserved)
            .map(|p| p.payment_id.clone())
            .collect();
        for id in ids {
            self.tick_payment(&id, now);
        }
        let rids: Vec<String> = self
            .refunds
            .values()
            .filter(|r| matches!(r.status, RefundStatus::Initiated | RefundStatus::Reserved))
            .map(|r| r.refund_id.clone())
            .collect();
        for r in rids {
            self.tick_refund(&r, now);
        }
        self.idem
            .retain(|_, e| now < e.at_ms.saturating_add(IDEMPOTENCY_KEEP_MS));
    }

    /// The PoS's payment in a V2 state, after its timers.
    fn blocking_payment(&mut self, terminal_id: &str, now: i64) -> Option<String> {
        let last = self.terminals.get(terminal_id)?.last_payment.clone()?;
        self.tick_payment(&last, now);
        self.payments
            .get(&last)
            .filter(|p| p.status.blocks_pos())
            .map(|p| p.payment_id.clone())
    }

    /// A payment leaving the waiting states frees the PoS's check-in it used.
    fn release_checkin(&mut self, terminal_id: &str, payment_id: &str) {
        if let Some(t) = self.terminals.get_mut(terminal_id)
            && t.last_payment.as_deref() == Some(payment_id)
        {
            t.checkin = None;
        }
    }

    // ----- payments (§1.2) -----------------------------------------------------------------

    fn payment_of(
        &mut self,
        bio: &str,
        payment_id: Option<&str>,
        now: i64,
    ) -> SimResult<&mut Payment> {
        let id = payment_id
            .filter(|p| !p.is_empty())
            .ok_or_else(|| SimError::bad("paymentId"))?;
        self.tick_payment(id, now);
        self.payments
            .get_mut(id)
            .filter(|p| p.bio_code == bio)
            .ok_or_else(|| SimError::not_found("payment"))
    }

    /// A replay under a V15 key, or 409 1306 for the key on another request.
    fn idem_lookup(
        &self,
        bio: &str,
        key: Option<&str>,
        fingerprint: &str,
        now: i64,
    ) -> SimResult<Option<String>> {
        let Some(key) = key else { return Ok(None) };
        match self.idem.get(&(bio.to_owned(), key.to_owned())) {
            Some(e) if now < e.at_ms.saturating_add(IDEMPOTENCY_KEEP_MS) => {
                if e.fingerprint == fingerprint {
                    Ok(Some(e.resource_id.clone()))
                } else {
                    Err(SimError::new(
                        409,
                        "1306",
                        "the idempotency key was used on another request",
                    ))
                }
            }
            _ => Ok(None),
        }
    }

    fn idem_store(
        &mut self,
        bio: &str,
        key: Option<&str>,
        fingerprint: String,
        id: &str,
        now: i64,
    ) {
        if let Some(key) = key {
            self.idem.insert(
                (bio.to_owned(), key.to_owned()),
                IdemEntry {
                    fingerprint,
                    resource_id: id.to_owned(),
                    at_ms: now,
                },
            );
        }
    }

    /// `payment/start` (by terminal or PoS): S1/V2, C1, V15, and the retry rule of §2.5.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        bio: &str,
        at: PosRef<'_>,
        order_id: Option<&str>,
        amount: Option<&str>,
        currency: Option<&str>,
        idem_key: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let order_id = non_empty(order_id, "orderId")?;
        let amount = amount_of(amount)?;
        let tid = self.terminal_id_of(bio, at)?;
        let currency = self.check_currency(&tid, currency)?;
        let fp = format!("start|{tid}|{order_id}|{amount}|{currency}");
        // A retried start without a key: the same order, amount and currency.
        let retry = |p: &Payment| {
            !p.prepared
                && p.order_id == order_id
                && p.amount_minor == Some(amount)
                && p.currency == currency
        };
        if let Some(id) = self.existing_payment(bio, &tid, idem_key, &fp, now, retry)? {
            return Ok(json!({ "paymentId": id }));
        }
        let id = self.create_payment(bio, &tid, order_id, Some(amount), now);
        self.idem_store(bio, idem_key, fp, &id, now);
        Ok(json!({ "paymentId": id }))
    }

    /// `payment/prepare`: S1/V2; the payment exists before its amount.
    pub fn prepare(
        &mut self,
        bio: &str,
        at: PosRef<'_>,
        order_id: Option<&str>,
        idem_key: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let order_id = non_empty(order_id, "orderId")?;
        let tid = self.terminal_id_of(bio, at)?;
        let fp = format!("prepare|{tid}|{order_id}");
        // A retried prepare without a key: the same order, still waiting for `ready`.
        let retry = |p: &Payment| {
            p.prepared
                && p.order_id == order_id
                && matches!(p.status, PaymentStatus::Prepared | PaymentStatus::Paired)
        };
        if let Some(id) = self.existing_payment(bio, &tid, idem_key, &fp, now, retry)? {
            return Ok(json!({ "paymentId": id }));
        }
        let id = self.create_payment(bio, &tid, order_id, None, now);
        self.idem_store(bio, idem_key, fp, &id, now);
        Ok(json!({ "paymentId": id }))
    }

    /// The payment a `start` or `prepare` answers with instead of creating one: the one its
    /// V15 key created, or the PoS's waiting payment when the request, without a key, is a
    /// `retry` of the one that created it. Any other waiting payment blocks the PoS (S1/V2).
    fn existing_payment(
        &mut self,
        bio: &str,
        tid: &str,
        idem_key: Option<&str>,
        fingerprint: &str,
        now: i64,
        retry: impl Fn(&Payment) -> bool,
    ) -> SimResult<Option<String>> {
        if let Some(id) = self.idem_lookup(bio, idem_key, fingerprint, now)? {
            return Ok(Some(id));
        }
        let Some(active) = self.blocking_payment(tid, now) else {
            return Ok(None);
        };
        if idem_key.is_none() && retry(&self.payments[&active]) {
            return Ok(Some(active));
        }
        Err(SimError::new(
            409,
            "1301",
            format!("the PoS has an active payment ({active}); cancel it first"),
        ))
    }

    fn check_currency(&self, tid: &str, currency: Option<&str>) -> SimResult<String> {
        let t = &self.terminals[tid];
        match currency {
            Some(c) if c.eq_ignore_ascii_case(&t.currency) => Ok(t.currency.clone()),
            Some(c) => Err(SimError::new(
                400,
                "400",
                format!(
                    "currencyCode {c} is not the terminal's currency {}",
                    t.currency
                ),
            )),
            None => Err(SimError::bad("currencyCode")),
        }
    }

    /// A payment on the terminal's PoS, in its currency: started when it has its `amount`,
    /// prepared (S2) when not; a customer checked in there is its customer at once.
    fn create_payment(
        &mut self,
        bio: &str,
        tid: &str,
        order_id: &str,
        amount: Option<i64>,
        now: i64,
    ) -> String {
        let id = (self.ids)();
        let t = self.terminals.get_mut(tid).expect("terminal");
        let prepared = amount.is_none();
        let status = match (prepared, t.checkin.is_some()) {
            (false, false) => PaymentStatus::Initiated,
            (false, true) => PaymentStatus::IssuedToUser,
            (true, false) => PaymentStatus::Prepared,
            (true, true) => PaymentStatus::Paired,
        };
        let p = Payment {
            payment_id: id.clone(),
            bio_code: bio.to_owned(),
            order_id: order_id.to_owned(),
            terminal_id: tid.to_owned(),
            pos_id: t.pos_id.clone().unwrap_or_default(),
            amount_minor: amount,
            currency: t.currency.clone(),
            status,
            prepared,
            partial_capture_possible: self.rules.partial_capture_possible,
            checkin: t.checkin.clone(),
            created_ms: now,
            last_activity_ms: now,
            reserved_at_ms: None,
            captured_minor: None,
            captured_at_ms: None,
            approving: false,
            reason: None,
            refund_ids: vec![],
        };
        t.last_payment = Some(id.clone());
        self.payments.insert(id.clone(), p);
        id
    }

    /// `payment/ready`: S2/V3 and C6. A repeated `ready` with the same amount is answered 200.
    #[allow(clippy::too_many_arguments)]
    pub fn ready(
        &mut self,
        bio: &str,
        payment_id: Option<&str>,
        order_id: Option<&str>,
        terminal_id: Option<&str>,
        amount: Option<&str>,
        currency: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let amount = amount_of(amount)?;
        let p = self.payment_of(bio, payment_id, now)?;
        if order_id.is_some_and(|o| o != p.order_id) {
            return Err(SimError::new(400, "400", "orderId is not the payment's"));
        }
        if terminal_id.is_some_and(|t| t != p.terminal_id) {
            return Err(SimError::new(400, "400", "terminalId is not the payment's"));
        }
        match currency {
            Some(c) if c.eq_ignore_ascii_case(&p.currency) => {}
            Some(_) => {
                return Err(SimError::new(
                    400,
                    "400",
                    "currencyCode is not the terminal's",
                ));
            }
            None => return Err(SimError::bad("currencyCode")),
        }
        let next = match p.status {
            PaymentStatus::Prepared if p.prepared => PaymentStatus::Initiated,
            PaymentStatus::Paired if p.prepared => PaymentStatus::IssuedToUser,
            PaymentStatus::Initiated | PaymentStatus::IssuedToUser
                if p.prepared && p.amount_minor == Some(amount) =>
            {
                return Ok(json!({ "paymentId": p.payment_id }));
            }
            _ => {
                return Err(SimError::new(
                    409,
                    "1303",
                    format!(
                        "payment is {}; ready needs a prepared payment",
                        p.status.as_str()
                    ),
                ));
            }
        };
        p.amount_minor = Some(amount);
        p.status = next;
        p.last_activity_ms = now;
        Ok(json!({ "paymentId": p.payment_id }))
    }

    pub fn status(&mut self, bio: &str, payment_id: Option<&str>, now: i64) -> SimResult<Value> {
        let p = self.payment_of(bio, payment_id, now)?;
        Ok(json!({"paymentId": p.payment_id, "status": p.status.as_str()}))
    }

    pub fn details(&mut self, bio: &str, payment_id: Option<&str>, now: i64) -> SimResult<Value> {
        let id = self.payment_of(bio, payment_id, now)?.payment_id.clone();
        let refunded = self.refunded_minor(&id);
        let p = &self.payments[&id];
        Ok(json!({
            "paymentId": p.payment_id,
            "orderId": p.order_id,
            "posId": p.pos_id,
            "terminalId": p.terminal_id,
            "amount": p.amount_minor.map(format_minor),
            "currencyCode": p.currency,
            "status": p.status.as_str(),
            "partialCapturePossible": p.partial_capture_possible,
            "capturedAmount": format_minor(p.captured_minor.unwrap_or(0)),
            "refundedAmount": format_minor(refunded),
            "pollDelayInMs": POLL_DELAY_MS,
        }))
    }

    fn refunded_minor(&self, payment_id: &str) -> i64 {
        self.payments[payment_id]
            .refund_ids
            .iter()
            .filter_map(|r| self.refunds.get(r))
            .filter(|r| r.status.is_captured())
            .map(|r| r.amount_minor)
            .sum()
    }

    /// `payments`: without `state`, every non-final payment (C1, `Reserved` included); with
    /// one, the payments in that state. `orderId` and `terminalId` filter.
    pub fn payments(
        &mut self,
        bio: &str,
        state: Option<&str>,
        order_id: Option<&str>,
        terminal_id: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let state = match state.filter(|s| !s.is_empty()) {
            Some(s) => Some(PaymentStatus::parse(s).ok_or_else(|| SimError::bad("state"))?),
            None => None,
        };
        self.tick(now);
        let mut list: Vec<&Payment> = self
            .payments
            .values()
            .filter(|p| p.bio_code == bio)
            .filter(|p| match state {
                Some(s) => p.status == s,
                None => !p.status.is_final(),
            })
            .filter(|p| order_id.is_none_or(|o| o == p.order_id))
            .filter(|p| terminal_id.is_none_or(|t| t == p.terminal_id))
            .collect();
        list.sort_by(|a, b| (a.created_ms, &a.payment_id).cmp(&(b.created_ms, &b.payment_id)));
        let items: Vec<Value> = list
            .iter()
            .map(|p| json!({"paymentId": p.payment_id, "orderId": p.order_id, "status": p.status.as_str()}))
            .collect();
        Ok(json!({ "payments": items }))
    }

    /// `id/retrieve/bystate` (S6: `Captured` only, else 400 1109), `byterminal`, `byposId`:
    /// the latest payment of the order in that state.
    pub fn retrieve(
        &mut self,
        bio: &str,
        order_id: Option<&str>,
        state: Option<&str>,
        at: Option<PosRef<'_>>,
        now: i64,
    ) -> SimResult<Value> {
        let order_id = non_empty(order_id, "orderId")?;
        let state = state.filter(|s| !s.is_empty());
        let wanted = match (at, state) {
            (None, Some(s)) => match PaymentStatus::parse(s) {
                Some(PaymentStatus::Captured) => Some(PaymentStatus::Captured),
                _ => {
                    return Err(SimError::new(
                        400,
                        "1109",
                        "id/retrieve/bystate works only with state Captured",
                    ));
                }
            },
            (None, None) => return Err(SimError::new(400, "1109", "state Captured is required")),
            (Some(_), Some(s)) => {
                Some(PaymentStatus::parse(s).ok_or_else(|| SimError::bad("paymentState"))?)
            }
            (Some(_), None) => None,
        };
        let tid = match at {
            Some(a) => Some(self.terminal_id_of(bio, a)?),
            None => None,
        };
        self.tick(now);
        self.payments
            .values()
            .filter(|p| p.bio_code == bio && p.order_id == order_id)
            .filter(|p| tid.as_ref().is_none_or(|t| *t == p.terminal_id))
            .filter(|p| wanted.is_none_or(|s| s == p.status))
            .max_by_key(|p| (p.created_ms, p.payment_id.clone()))
            .map(|p| json!({ "paymentId": p.payment_id }))
            .ok_or_else(|| SimError::not_found("payment"))
    }

    /// `payment/capture`: S3/V4, V5, V6, V7, C5. Decided here; the call to us follows.
    pub fn capture(
        &mut self,
        bio: &str,
        payment_id: Option<&str>,
        amount: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let p = self.payment_of(bio, payment_id, now)?;
        let reserved = p.amount_minor.unwrap_or(0);
        let amount = match amount.filter(|a| !a.is_empty()) {
            Some(a) => parse_minor(a).ok_or_else(SimError::bad_amount)?,
            None => reserved,
        };
        let ok = json!({"paymentId": p.payment_id, "status": "Captured", "capturedAmount": format_minor(amount)});
        match p.status {
            PaymentStatus::Captured if p.captured_minor == Some(amount) => return Ok(ok),
            PaymentStatus::Captured => {
                return Err(SimError::new(
                    409,
                    "1307",
                    "the payment was captured with a different amount",
                ));
            }
            PaymentStatus::Reserved => {}
            s => {
                return Err(SimError::new(
                    409,
                    "1304",
                    format!("payment is {}; capture needs Reserved", s.as_str()),
                ));
            }
        }
        if amount > reserved {
            return Err(SimError::new(
                409,
                "1305",
                "amount exceeds the reserved amount",
            ));
        }
        if amount < reserved && !p.partial_capture_possible {
            return Err(SimError::new(
                409,
                "1308",
                "partial capture is not possible",
            ));
        }
        p.status = PaymentStatus::Captured;
        p.captured_minor = Some(amount);
        p.captured_at_ms = Some(now);
        let call = Call::Capture {
            payment_id: p.payment_id.clone(),
            amount_minor: amount,
        };
        self.owed.push(call);
        Ok(ok)
    }

    /// `payment/cancel`: C4. A `Reserved` payment owes us a cancel.
    pub fn cancel(&mut self, bio: &str, payment_id: Option<&str>, now: i64) -> SimResult<Value> {
        let p = self.payment_of(bio, payment_id, now)?;
        let ok = json!({"paymentId": p.payment_id, "status": "CancelledByClient"});
        let call = match p.status {
            PaymentStatus::CancelledByClient => return Ok(ok),
            s if s.blocks_pos() => None,
            PaymentStatus::Reserved => Some(Call::Cancel {
                payment_id: p.payment_id.clone(),
            }),
            s => {
                return Err(SimError::new(
                    409,
                    "1300",
                    format!("payment is {}; it cannot be cancelled", s.as_str()),
                ));
            }
        };
        p.status = PaymentStatus::CancelledByClient;
        p.last_activity_ms = now;
        let (tid, pid) = (p.terminal_id.clone(), p.payment_id.clone());
        self.release_checkin(&tid, &pid);
        // A cancel while the approval's reserve is in flight: the approval's answer sees the
        // status and cancels what it reserved (see `finish_approve`).
        self.owed.extend(call);
        Ok(ok)
    }

    // ----- customer actions (/sim) -----------------------------------------------------------

    /// A customer with one of our cards checks in at a PoS: `Initiated` -> `IssuedToUser`,
    /// `Prepared` -> `Paired`; with no waiting payment the check-in waits for the next one.
    pub fn checkin(
        &mut self,
        bio: &str,
        at: PosRef<'_>,
        user_id: &str,
        card_id: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        if user_id.is_empty() {
            return Err(SimError::bad("user_id"));
        }
        let tid = self.terminal_id_of(bio, at)?;
        let c = CheckIn {
            user_id: user_id.to_owned(),
            card_id: card_id.filter(|c| !c.is_empty()).map(str::to_owned),
        };
        let blocking = self.blocking_payment(&tid, now);
        if let Some(id) = &blocking {
            let p = self.payments.get_mut(id).expect("payment");
            if p.checkin.as_ref().is_some_and(|old| *old != c) {
                return Err(SimError::new(
                    409,
                    "409",
                    "another customer is checked in at this PoS",
                ));
            }
            p.status = match p.status {
                PaymentStatus::Initiated => PaymentStatus::IssuedToUser,
                PaymentStatus::Prepared => PaymentStatus::Paired,
                s => s,
            };
            p.checkin = Some(c.clone());
            p.last_activity_ms = now;
        }
        self.terminals.get_mut(&tid).expect("terminal").checkin = Some(c);
        let status = blocking.map(|id| self.payments[&id].status.as_str());
        Ok(
            json!({"checkedIn": true, "paymentId": self.terminals[&tid].last_payment.clone().filter(|_| status.is_some()), "status": status}),
        )
    }

    /// The customer declines in the app: `Paired`/`IssuedToUser` -> `CancelledByUser`.
    pub fn decline(&mut self, bio: &str, payment_id: &str, now: i64) -> SimResult<Value> {
        self.customer_final(
            bio,
            payment_id,
            now,
            &[PaymentStatus::Paired, PaymentStatus::IssuedToUser],
            PaymentStatus::CancelledByUser,
        )
    }

    /// Age restriction: `IssuedToUser` -> `RejectedByMobilePayDueToAgeRestrictions`.
    pub fn age_reject(&mut self, bio: &str, payment_id: &str, now: i64) -> SimResult<Value> {
        self.customer_final(
            bio,
            payment_id,
            now,
            &[PaymentStatus::IssuedToUser],
            PaymentStatus::RejectedByMobilePayDueToAgeRestrictions,
        )
    }

    fn customer_final(
        &mut self,
        bio: &str,
        payment_id: &str,
        now: i64,
        from: &[PaymentStatus],
        to: PaymentStatus,
    ) -> SimResult<Value> {
        let p = self.payment_of(bio, Some(payment_id), now)?;
        if !from.contains(&p.status) || p.approving {
            return Err(SimError::new(
                409,
                "409",
                format!("payment is {}", p.status.as_str()),
            ));
        }
        p.status = to;
        let (tid, pid) = (p.terminal_id.clone(), p.payment_id.clone());
        self.release_checkin(&tid, &pid);
        Ok(json!({"paymentId": pid, "status": to.as_str()}))
    }

    /// Approval, first half: an `IssuedToUser` payment with its amount and customer becomes
    /// `approving`, and the reserve call to make is returned.
    pub fn begin_approve(
        &mut self,
        bio: &str,
        payment_id: &str,
        now: i64,
    ) -> SimResult<ReserveCall> {
        let expires_in_secs = self.rules.expires_in_secs;
        let merchant_name = self
            .merchants
            .get(bio)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let p = self.payment_of(bio, Some(payment_id), now)?;
        if p.approving {
            return Err(SimError::new(409, "409", "the approval is in progress"));
        }
        if p.status != PaymentStatus::IssuedToUser {
            return Err(SimError::new(
                409,
                "409",
                format!(
                    "payment is {}; approve needs IssuedToUser",
                    p.status.as_str()
                ),
            ));
        }
        let (Some(c), Some(amount)) = (p.checkin.clone(), p.amount_minor) else {
            return Err(SimError::new(409, "409", "no customer or amount"));
        };
        p.approving = true;
        p.reserved_at_ms = Some(now);
        let (tid, mcc) = (p.terminal_id.clone(), String::new());
        let mcc = self
            .terminals
            .get(&tid)
            .map(|t| t.mcc.clone())
            .unwrap_or(mcc);
        let p = &self.payments[payment_id];
        Ok(ReserveCall {
            reservation_id: p.payment_id.clone(),
            user_id: c.user_id,
            card_id: c.card_id,
            amount_minor: amount,
            currency: p.currency.clone(),
            merchant_id: bio.to_owned(),
            merchant_name,
            mcc,
            expires_in_secs,
            partial_capture_possible: p.partial_capture_possible,
            reference: p.order_id.clone(),
        })
    }

    /// Approval, second half, with what the authorizer said. Returns the answer for the
    /// customer; a cancel is owed when a hold may exist that no payment stands for.
    pub fn finish_approve(
        &mut self,
        payment_id: &str,
        outcome: &ReserveOutcome,
        now: i64,
    ) -> Value {
        let Some(p) = self.payments.get_mut(payment_id) else {
            return json!({});
        };
        p.approving = false;
        let still_waiting = p.status == PaymentStatus::IssuedToUser;
        let cancel = Call::Cancel {
            payment_id: payment_id.to_owned(),
        };
        // Why MobilePay cancels the payment if it is still waiting, and the call owed.
        let (reason, call) = match outcome {
            ReserveOutcome::Approved if still_waiting => {
                p.status = PaymentStatus::Reserved;
                p.last_activity_ms = now;
                (None, None)
            }
            // Cancelled (by the client) while we asked: release what was reserved.
            ReserveOutcome::Approved => (None, Some(cancel)),
            ReserveOutcome::Rejected(detail) => (Some(detail.clone()), None),
            // No answer: a hold may have been committed unseen.
            ReserveOutcome::NoAnswer(why) => (Some(format!("no_answer: {why}")), Some(cancel)),
            // Refused outright (4xx): nothing was reserved.
            ReserveOutcome::Refused(why) => (Some(why.clone()), None),
        };
        if still_waiting && reason.is_some() {
            p.status = PaymentStatus::CancelledByMobilePay;
            p.reason = reason;
        }
        let (tid, pid) = (p.terminal_id.clone(), p.payment_id.clone());
        let body = json!({"paymentId": pid, "status": p.status.as_str(), "reason": p.reason});
        self.release_checkin(&tid, &pid);
        self.owed.extend(call);
        body
    }

    // ----- refunds (§1.3, §1.6) ------------------------------------------------------------

    /// `refund/create`: V9-V12 (pending refunds counted); V13 is not simulated. Created
    /// `Reserved` at once. Without a key, the same `refundOrderId` and amount on the same
    /// payment is a retry and returns the same refund.
    #[allow(clippy::too_many_arguments)]
    pub fn create_refund(
        &mut self,
        bio: &str,
        payment_id: Option<&str>,
        amount: Option<&str>,
        currency: Option<&str>,
        refund_order_id: Option<&str>,
        idem_key: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let amount = amount_of(amount)?;
        let refund_order_id = non_empty(refund_order_id, "refundOrderId")?.to_owned();
        let currency = non_empty(currency, "currencyCode")?.to_ascii_uppercase();
        let window = self.rules.refund_window_ms;
        let pid = self.payment_of(bio, payment_id, now)?.payment_id.clone();
        let fp = format!("refund|{pid}|{refund_order_id}|{amount}|{currency}");
        if let Some(id) = self.idem_lookup(bio, idem_key, &fp, now)? {
            return Ok(json!({ "refundId": id }));
        }
        let p = &self.payments[&pid];
        if idem_key.is_none() {
            for r in p.refund_ids.iter().filter_map(|r| self.refunds.get(r)) {
                if r.refund_order_id == refund_order_id {
                    if r.amount_minor == amount && r.currency == currency {
                        return Ok(json!({ "refundId": r.refund_id }));
                    }
                    return Err(SimError::new(
                        409,
                        "1306",
                        "refundOrderId was used for another refund of this payment",
                    ));
                }
            }
        }
        if p.status != PaymentStatus::Captured {
            return Err(SimError::new(
                409,
                "1354",
                format!(
                    "payment is {}; only a Captured payment is refunded",
                    p.status.as_str()
                ),
            ));
        }
        if currency != p.currency {
            return Err(SimError::new(
                409,
                "1365",
                "refund currency is not the payment's",
            ));
        }
        if now > p.captured_at_ms.unwrap_or(now).saturating_add(window) {
            return Err(SimError::new(
                409,
                "1366",
                "the payment is too old to refund",
            ));
        }
        let taken: i64 = p
            .refund_ids
            .iter()
            .filter_map(|r| self.refunds.get(r))
            .filter(|r| r.status.counts())
            .map(|r| r.amount_minor)
            .sum();
        if taken + amount > p.captured_minor.unwrap_or(0) {
            return Err(SimError::new(
                409,
                "1367",
                "refunds would exceed the captured amount",
            ));
        }
        let id = (self.ids)();
        self.refunds.insert(
            id.clone(),
            Refund {
                refund_id: id.clone(),
                payment_id: pid.clone(),
                refund_order_id,
                amount_minor: amount,
                currency,
                status: RefundStatus::Reserved,
                created_ms: now,
            },
        );
        self.payments
            .get_mut(&pid)
            .expect("payment")
            .refund_ids
            .push(id.clone());
        self.idem_store(bio, idem_key, fp, &id, now);
        Ok(json!({ "refundId": id }))
    }

    fn refund_of(&mut self, bio: &str, refund_id: Option<&str>, now: i64) -> SimResult<String> {
        let id = refund_id
            .filter(|r| !r.is_empty())
            .ok_or_else(|| SimError::bad("refundId"))?;
        let r = self
            .refunds
            .get(id)
            .ok_or_else(|| SimError::not_found("refund"))?;
        if self
            .payments
            .get(&r.payment_id)
            .is_none_or(|p| p.bio_code != bio)
        {
            return Err(SimError::not_found("refund"));
        }
        self.tick_refund(id, now);
        Ok(id.to_owned())
    }

    pub fn refund_details(
        &mut self,
        bio: &str,
        refund_id: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let id = self.refund_of(bio, refund_id, now)?;
        let r = &self.refunds[&id];
        Ok(json!({
                "refundId": r.refund_id,
                "paymentId": r.payment_id,
                "refundOrderId": r.refund_order_id,
                "amount": format_minor(r.amount_minor),
                "currencyCode": r.currency,
                "status": r.status.as_str(),
        }))
    }

    pub fn refunds_of(
        &mut self,
        bio: &str,
        payment_id: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let p = self.payment_of(bio, payment_id, now)?;
        Ok(json!({ "refundIds": p.refund_ids }))
    }

    /// `refund/capture`: V14 (1351). A repeat on a captured refund is answered 200.
    pub fn capture_refund(
        &mut self,
        bio: &str,
        refund_id: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let id = self.refund_of(bio, refund_id, now)?;
        let r = self.refunds.get_mut(&id).expect("refund");
        match r.status {
            RefundStatus::Reserved | RefundStatus::Initiated => {
                r.status = RefundStatus::Captured;
                let body = r.answer();
                let call = refund_call(r);
                self.owed.push(call);
                Ok(body)
            }
            RefundStatus::Captured | RefundStatus::ExpiredAndCaptured => Ok(r.answer()),
            s => Err(SimError::new(
                409,
                "1351",
                format!("refund is {}; capture needs Reserved", s.as_str()),
            )),
        }
    }

    /// `refund/cancel`: V14 (1352). A repeat on a cancelled refund is answered 200.
    pub fn cancel_refund(
        &mut self,
        bio: &str,
        refund_id: Option<&str>,
        now: i64,
    ) -> SimResult<Value> {
        let id = self.refund_of(bio, refund_id, now)?;
        let r = self.refunds.get_mut(&id).expect("refund");
        match r.status {
            RefundStatus::Reserved | RefundStatus::Initiated | RefundStatus::CancelledByClient => {
                r.status = RefundStatus::CancelledByClient;
                Ok(r.answer())
            }
            s => Err(SimError::new(
                409,
                "1352",
                format!("refund is {}; it cannot be cancelled", s.as_str()),
            )),
        }
    }

    // ----- read-outs for the load mode and tests ------------------------------------------

    pub fn payment(&self, id: &str) -> Option<&Payment> {
        self.payments.get(id)
    }

    pub fn refund(&self, id: &str) -> Option<&Refund> {
        self.refunds.get(id)
    }

    /// Counts by status, for `/sim/stats`.
    pub fn counts(&self) -> Value {
        let mut by: BTreeMap<&str, u64> = BTreeMap::new();
        for p in self.payments.values() {
            *by.entry(p.status.as_str()).or_default() += 1;
        }
        let mut rby: BTreeMap<&str, u64> = BTreeMap::new();
        for r in self.refunds.values() {
            *rby.entry(r.status.as_str()).or_default() += 1;
        }
        json!({"payments": by, "refunds": rby})
    }
}

/// What the authorizer said to a reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Approved,
    /// `REJECTED` with its `status_detail`.
    Rejected(String),
    /// No (verified) answer after the retries.
    NoAnswer(String),
    /// A 4xx: the request was refused and nothing reserved.
    Refused(String),
}

fn refund_call(r: &Refund) -> Call {
    Call::Refund {
        payment_id: r.payment_id.clone(),
        refund_id: r.refund_id.clone(),
        amount_minor: r.amount_minor,
        currency: r.currency.clone(),
    }
}

/// An amount argument in minor units: present, positive, at most two decimals (1102).
fn amount_of(v: Option<&str>) -> SimResult<i64> {
    v.and_then(parse_minor).ok_or_else(SimError::bad_amount)
}

fn non_empty<'a>(v: Option<&'a str>, field: &str) -> SimResult<&'a str> {
    v.filter(|s| !s.trim().is_empty())
        .ok_or_else(|| SimError::bad(field))
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
