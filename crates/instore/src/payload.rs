//! Typed payloads of every served action (sections 2, 3 and 4), read from the verified
//! value with the seed's field names. Unknown members are ignored (they are signed, and
//! InStore may add fields); `null` reads as absent for an optional member.

use std::fmt;

use crate::error::{ErrorCode, InstoreError};
use crate::json::{Node, Value, js};
use crate::money::{WireAmount, WireUint, read_uint};
use crate::signature::{hmac_sha256, sha256_hex, to_hex};
use crate::tenant::SecretString;

/// The request hash of section 1.5: SHA-256 of `JS(payload)`, lower-case hex, with every
/// string member named `pin` or `cvc` (at any depth) replaced first by its keyed hash under
/// `secret_key` (`instore.secret_hash_key`), as the PINs and CVCs themselves are kept. The
/// hash is stored with each request: over the plain secret, a copy of the database could
/// test a 4-digit PIN's 10,000 guesses against it (every other member can be read back from
/// the stored rows). A payload without such members hashes as section 1.5 says.
pub fn request_hash(payload: &Value, secret_key: &[u8]) -> String {
    if !holds_secret("", payload) {
        return sha256_hex(js(payload).as_bytes());
    }
    sha256_hex(js(&keyed_secrets(payload, secret_key)).as_bytes())
}

/// The request hash as versions before the keyed secrets took it: SHA-256 of `JS(payload)`
/// with the secrets as sent. `None` when the payload has none (the two are one). Only
/// compared with a request recorded before the upgrade, never stored.
pub fn request_hash_unkeyed(payload: &Value) -> Option<String> {
    holds_secret("", payload).then(|| sha256_hex(js(payload).as_bytes()))
}

/// `value` with every string member named `pin` or `cvc` replaced by its keyed hash.
fn keyed_secrets(value: &Value, key: &[u8]) -> Value {
    let node = |value: Value| Node { value, span: 0..0 };
    match value {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(n, v)| {
                    let v = match &v.value {
                        Value::String(s) if is_secret(n) => Value::String(format!(
                            "hmac-sha256:{}",
                            to_hex(&hmac_sha256(key, s.as_bytes()))
                        )),
                        other => keyed_secrets(other, key),
                    };
                    (n.clone(), node(v))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| node(keyed_secrets(&v.value, key)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn is_secret(name: &str) -> bool {
    name == "pin" || name == "cvc"
}

/// Whether a member `name` of this value is, or holds, a secret to key.
fn holds_secret(name: &str, value: &Value) -> bool {
    match value {
        Value::String(_) => is_secret(name),
        Value::Object(members) => members.iter().any(|(n, v)| holds_secret(n, &v.value)),
        Value::Array(items) => items.iter().any(|v| holds_secret("", &v.value)),
        _ => false,
    }
}

/// A stored-value or account number. `Debug` shows only the last four characters: a full
/// number never reaches a log.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CardNumber(String);

/// Longest number admitted; pre-printed stored-value numbers are far shorter.
pub const NUMBER_CHARS_MAX: usize = 64;

impl CardNumber {
    pub fn parse(s: &str, field: &str) -> Result<CardNumber, InstoreError> {
        if s.is_empty() || s.len() > NUMBER_CHARS_MAX || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InstoreError::invalid(
                field,
                "must be 1 to 64 printable ASCII characters",
            ));
        }
        Ok(CardNumber(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last four characters, the most of a number a log may show.
    pub fn last_four(&self) -> &str {
        &self.0[self.0.len().saturating_sub(4)..]
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber(****{})", self.last_four())
    }
}

/// Reads the members of one object, naming fields with a path for error messages.
pub(crate) struct Fields<'a> {
    value: &'a Value,
    path: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(value: &'a Value, path: &'a str) -> Result<Fields<'a>, InstoreError> {
        match value {
            Value::Object(_) => Ok(Fields { value, path }),
            _ => Err(InstoreError::invalid(
                if path.is_empty() { "the body" } else { path },
                "must be an object",
            )),
        }
    }

    fn name(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        match self.value.get(field) {
            None
            | Some(Node {
                value: Value::Null, ..
            }) => None,
            Some(n) => Some(&n.value),
        }
    }

    fn required<T>(&self, field: &str, v: Option<T>) -> Result<T, InstoreError> {
        v.ok_or_else(|| InstoreError::missing(&self.name(field)))
    }

    pub(crate) fn opt_str(&self, field: &str) -> Result<Option<String>, InstoreError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(InstoreError::invalid(&self.name(field), "must be a string")),
        }
    }

    pub(crate) fn str(&self, field: &str) -> Result<String, InstoreError> {
        let v = self.opt_str(field)?;
        self.required(field, v)
    }

    fn number(&self, field: &str) -> Result<CardNumber, InstoreError> {
        CardNumber::parse(&self.str(field)?, &self.name(field))
    }

    fn opt_secret(&self, field: &str) -> Result<Option<SecretString>, InstoreError> {
        Ok(self.opt_str(field)?.map(SecretString::new))
    }

    fn opt_str_array(&self, field: &str) -> Result<Option<Vec<String>>, InstoreError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|n| {
                    n.value.as_str().map(str::to_owned).ok_or_else(|| {
                        InstoreError::invalid(&self.name(field), "must be an array of strings")
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(InstoreError::invalid(
                &self.name(field),
                "must be an array of strings",
            )),
        }
    }

    fn opt_amount(&self, field: &str) -> Result<Option<WireAmount>, InstoreError> {
        self.get(field)
            .map(|v| WireAmount::read(v, &self.name(field)))
            .transpose()
    }

    fn amount(&self, field: &str) -> Result<WireAmount, InstoreError> {
        let v = self.opt_amount(field)?;
        self.required(field, v)
    }

    fn opt_uint(&self, field: &str) -> Result<Option<WireUint>, InstoreError> {
        self.get(field)
            .map(|v| read_uint(v, &self.name(field)))
            .transpose()
    }

    fn uint(&self, field: &str) -> Result<WireUint, InstoreError> {
        let v = self.opt_uint(field)?;
        self.required(field, v)
    }

    fn one_of<T: Copy>(&self, field: &str, choices: &[(&str, T)]) -> Result<T, InstoreError> {
        let text = self.str(field)?;
        choices
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                InstoreError::invalid(
                    &self.name(field),
                    &format!("must be one of {}", names.join(", ")),
                )
            })
    }
}

/// The stored-value card types of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardType {
    GiftCard,
    ReturnCard,
    Promotional,
}

impl CardType {
    const CHOICES: [(&'static str, CardType); 3] = [
        ("GiftCard", CardType::GiftCard),
        ("ReturnCard", CardType::ReturnCard),
        ("Promotional", CardType::Promotional),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CardType::GiftCard => "GiftCard",
            CardType::ReturnCard => "ReturnCard",
            CardType::Promotional => "Promotional",
        }
    }
}

/// `Active` or `Inactive` as the seed writes a card status.
pub fn card_status_str(active: bool) -> &'static str {
    if active { "Active" } else { "Inactive" }
}

/// Members every stored-value payload carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreContext {
    pub request_id: String,
    pub location_id: String,
    pub workstation_id: Option<String>,
}

impl StoreContext {
    fn read(f: &Fields<'_>) -> Result<StoreContext, InstoreError> {
        Ok(StoreContext {
            request_id: f.str("requestId")?,
            location_id: f.str("locationId")?,
            workstation_id: f.opt_str("workstationId")?,
        })
    }
}

/// Reads a stored-value payload: its [`StoreContext`] first, then the rest with `read`,
/// whose refusal carries the payload's `requestId`.
fn read_stored_value<T>(
    payload: &Value,
    read: impl FnOnce(&Fields<'_>, &StoreContext) -> Result<T, InstoreError>,
) -> Result<T, InstoreError> {
    let f = Fields::new(payload, "payload")?;
    let context = StoreContext::read(&f)?;
    read(&f, &context).map_err(|e| e.with_request_id(Some(&context.request_id)))
}

/// `storedvaluecard` (section 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValueCreate {
    pub context: StoreContext,
    pub card_type: CardType,
    pub active: bool,
    pub balance: WireAmount,
    pub issuer: Option<String>,
    pub cvc: Option<SecretString>,
    pub customer_id: Option<String>,
}

/// One `InjectedStoredValueAccount` (section 2.6). Its `balance` and `type` are never
/// trusted; they are kept to count mismatches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedAccount {
    pub number: CardNumber,
    pub pin: Option<SecretString>,
    pub balance: Option<WireAmount>,
    pub card_type: Option<CardType>,
    pub payment_processor_id: Option<String>,
}

fn read_accounts(f: &Fields<'_>) -> Result<Vec<InjectedAccount>, InstoreError> {
    let Some(v) = f.get("accounts") else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        return Err(InstoreError::invalid(
            &f.name("accounts"),
            "must be an array",
        ));
    };
    let path = f.name("accounts[]");
    items
        .iter()
        .map(|n| {
            let a = Fields::new(&n.value, &path)?;
            let card_type = if a.get("type").is_some() {
                Some(a.one_of("type", &CardType::CHOICES)?)
            } else {
                None
            };
            Ok(InjectedAccount {
                number: a.number("number")?,
                pin: a.opt_secret("pin")?,
                balance: a.opt_amount("balance")?,
                card_type,
                payment_processor_id: a.opt_str("paymentProcessorId")?,
            })
        })
        .collect()
}

/// One card of a request's card set: the number and the PIN presented for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSetEntry {
    pub number: CardNumber,
    pub pin: Option<SecretString>,
    /// The injected account, when the number came from `accounts`.
    pub injected: Option<InjectedAccount>,
}

/// The cards a request names, in order: `number`, then the `accounts[].number` values not
/// yet listed (section 2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSet {
    pub cards: Vec<CardSetEntry>,
    /// Echoed in the `results` acknowledgement when every account carries the same value.
    pub payment_processor_id: Option<String>,
}

impl CardSet {
    pub fn build(
        number: &CardNumber,
        pin: Option<&SecretString>,
        accounts: &[InjectedAccount],
    ) -> Result<CardSet, InstoreError> {
        let mut ids = accounts.iter().map(|a| a.payment_processor_id.as_deref());
        let payment_processor_id = match ids.next() {
            None => None,
            Some(first) => {
                if ids.any(|other| other != first) {
                    return Err(InstoreError::new(
                        ErrorCode::MixedProcessors,
                        "accounts name different paymentProcessorId values",
                    ));
                }
                first.filter(|s| !s.is_empty()).map(str::to_owned)
            }
        };
        let mut cards = vec![CardSetEntry {
            number: number.clone(),
            pin: pin.cloned(),
            injected: None,
        }];
        for (i, a) in accounts.iter().enumerate() {
            if accounts[..i].iter().any(|b| b.number == a.number) {
                return Err(InstoreError::new(
                    ErrorCode::DuplicateAccount,
                    "a number appears twice in accounts",
                ));
            }
            match cards.iter_mut().find(|c| c.number == a.number) {
                // The request's own number listed again: its injected PIN applies when the
                // payload gave none.
                Some(existing) => {
                    if existing.pin.is_none() {
                        existing.pin = a.pin.clone();
                    }
                    existing.injected = Some(a.clone());
                }
                None => cards.push(CardSetEntry {
                    number: a.number.clone(),
                    pin: a.pin.clone(),
                    injected: Some(a.clone()),
                }),
            }
        }
        Ok(CardSet {
            cards,
            payment_processor_id,
        })
    }
}

/// `storedvaluecard/:number` (section 2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValueLookup {
    pub context: StoreContext,
    pub number: CardNumber,
    pub cart_key: String,
    pub pin: Option<SecretString>,
    pub accounts: Vec<InjectedAccount>,
}

/// `Load` or `Redeem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyAction {
    Load,
    Redeem,
}

/// `storedvaluecard_process` (sections 2.3 and 2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValueProcess {
    Move {
        action: MoneyAction,
        context: StoreContext,
        number: CardNumber,
        amount: WireAmount,
        session_id: String,
        reference: String,
        cvc: Option<SecretString>,
        accounts: Vec<InjectedAccount>,
    },
    Cancel {
        context: StoreContext,
        number: CardNumber,
        external_transaction_id: String,
        external_payment_id: String,
    },
}

#[derive(Clone, Copy)]
enum ProcessAction {
    Load,
    Redeem,
    Cancel,
}

impl StoredValueCreate {
    pub fn read(payload: &Value) -> Result<StoredValueCreate, InstoreError> {
        read_stored_value(payload, |f, context| {
            Ok(StoredValueCreate {
                card_type: f.one_of("type", &CardType::CHOICES)?,
                active: f.one_of("status", &[("Active", true), ("Inactive", false)])?,
                balance: f.amount("balance")?,
                issuer: f.opt_str("issuer")?,
                cvc: f.opt_secret("cvc")?,
                customer_id: f.opt_str("customer_id")?,
                context: context.clone(),
            })
        })
    }
}

impl StoredValueLookup {
    pub fn read(payload: &Value) -> Result<StoredValueLookup, InstoreError> {
        read_stored_value(payload, |f, context| {
            Ok(StoredValueLookup {
                number: f.number("number")?,
                cart_key: f.str("cartKey")?,
                pin: f.opt_secret("pin")?,
                accounts: read_accounts(f)?,
                context: context.clone(),
            })
        })
    }

    pub fn card_set(&self) -> Result<CardSet, InstoreError> {
        CardSet::build(&self.number, self.pin.as_ref(), &self.accounts)
    }
}

impl StoredValueProcess {
    pub fn read(payload: &Value) -> Result<StoredValueProcess, InstoreError> {
        read_stored_value(payload, |f, context| {
            let action = f.one_of(
                "action",
                &[
                    ("Load", ProcessAction::Load),
                    ("Redeem", ProcessAction::Redeem),
                    ("Cancel", ProcessAction::Cancel),
                ],
            )?;
            let number = f.number("number")?;
            let money = match action {
                ProcessAction::Load => MoneyAction::Load,
                ProcessAction::Redeem => MoneyAction::Redeem,
                ProcessAction::Cancel => {
                    return Ok(StoredValueProcess::Cancel {
                        context: context.clone(),
                        number,
                        external_transaction_id: f.str("external_transaction_id")?,
                        external_payment_id: f.str("external_payment_id")?,
                    });
                }
            };
            Ok(StoredValueProcess::Move {
                action: money,
                context: context.clone(),
                number,
                amount: f.amount("amount")?,
                session_id: f.str("session_id")?,
                reference: f.str("reference")?,
                cvc: f.opt_secret("cvc")?,
                accounts: read_accounts(f)?,
            })
        })
    }

    pub fn context(&self) -> &StoreContext {
        match self {
            StoredValueProcess::Move { context, .. }
            | StoredValueProcess::Cancel { context, .. } => context,
        }
    }

    /// The callback's `action`.
    pub fn action_name(&self) -> &'static str {
        match self {
            StoredValueProcess::Move {
                action: MoneyAction::Load,
                ..
            } => "Load",
            StoredValueProcess::Move {
                action: MoneyAction::Redeem,
                ..
            } => "Redeem",
            StoredValueProcess::Cancel { .. } => "Cancel",
        }
    }
}

/// Default and bounds of the log's `limit` parameter.
pub const LOG_LIMIT_DEFAULT: u16 = 100;
pub const LOG_LIMIT_MAX: u16 = 500;

/// `storedvaluelog/:number` query (section 2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValueLogQuery {
    pub context: StoreContext,
    pub limit: u16,
    pub cursor: Option<String>,
}

impl StoredValueLogQuery {
    pub fn read(params: &[(String, String)]) -> Result<StoredValueLogQuery, InstoreError> {
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let request_id = get("requestId").ok_or_else(|| InstoreError::missing("requestId"))?;
        let fail = |e: InstoreError| e.with_request_id(Some(&request_id));
        let location_id =
            get("locationId").ok_or_else(|| fail(InstoreError::missing("locationId")))?;
        let limit = match get("limit") {
            None => LOG_LIMIT_DEFAULT,
            Some(l) => l
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=LOG_LIMIT_MAX).contains(n))
                // "01" parses as 1; the query is signed as text, so only one spelling counts.
                .filter(|n| n.to_string() == l)
                .ok_or_else(|| {
                    fail(InstoreError::invalid(
                        "limit",
                        "must be an integer within 1..=500",
                    ))
                })?,
        };
        Ok(StoredValueLogQuery {
            context: StoreContext {
                request_id: request_id.clone(),
                location_id,
                workstation_id: get("workstationId"),
            },
            limit,
            cursor: get("cursor"),
        })
    }
}

/// The POA actions of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoaAction {
    Create,
    Credit,
    Inquiry,
    Update,
}

impl PoaAction {
    const CHOICES: [(&'static str, PoaAction); 4] = [
        ("Create", PoaAction::Create),
        ("Credit", PoaAction::Credit),
        ("Inquiry", PoaAction::Inquiry),
        ("Update", PoaAction::Update),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PoaAction::Create => "Create",
            PoaAction::Credit => "Credit",
            PoaAction::Inquiry => "Inquiry",
            PoaAction::Update => "Update",
        }
    }
}

/// `payonaccount/process` (section 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaProcess {
    pub action: PoaAction,
    pub account_number: CardNumber,
    pub company_name: Option<String>,
    pub authorized_user_ids: Option<Vec<String>>,
    /// Not in the seed's request; tolerated as the performing user of a `Credit`.
    pub authorized_user_id: Option<String>,
    pub balance: Option<WireAmount>,
    pub credit_limit: Option<WireAmount>,
}

impl PoaProcess {
    /// Reads the body (bare) or the payload (envelope). `Credit` needs `balance` and
    /// `Create` needs `credit_limit`: without them there is nothing to decide.
    pub fn read(value: &Value) -> Result<PoaProcess, InstoreError> {
        let f = Fields::new(value, "")?;
        let action = f.one_of("action", &PoaAction::CHOICES)?;
        let p = PoaProcess {
            action,
            account_number: f.number("account_number")?,
            company_name: f.opt_str("company_name")?,
            authorized_user_ids: f.opt_str_array("authorized_user_ids")?,
            authorized_user_id: f.opt_str("authorized_user_id")?,
            balance: f.opt_amount("balance")?,
            credit_limit: f.opt_amount("credit_limit")?,
        };
        match action {
            PoaAction::Credit if p.balance.is_none() => Err(InstoreError::missing("balance")),
            PoaAction::Create if p.credit_limit.is_none() => {
                Err(InstoreError::missing("credit_limit"))
            }
            _ => Ok(p),
        }
    }
}

/// `approved` or `declined`, the POA status vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoaStatus {
    Approved,
    Declined,
}

impl PoaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PoaStatus::Approved => "approved",
            PoaStatus::Declined => "declined",
        }
    }
}

/// `payonaccountlog` (section 3.2): stored and echoed; no money moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaLogRecord {
    pub action: PoaAction,
    pub account_number: CardNumber,
    pub company_name: Option<String>,
    pub authorized_user_id: Option<String>,
    pub amount: Option<WireAmount>,
    pub session_id: Option<String>,
    pub order_id: Option<String>,
    pub status: PoaStatus,
}

impl PoaLogRecord {
    pub fn read(value: &Value) -> Result<PoaLogRecord, InstoreError> {
        let f = Fields::new(value, "")?;
        Ok(PoaLogRecord {
            action: f.one_of("action", &PoaAction::CHOICES)?,
            account_number: f.number("account_number")?,
            company_name: f.opt_str("company_name")?,
            authorized_user_id: f.opt_str("authorized_user_id")?,
            amount: f.opt_amount("amount")?,
            session_id: f.opt_str("session_id")?,
            order_id: f.opt_str("order_id")?,
            status: f.one_of(
                "status",
                &[
                    ("approved", PoaStatus::Approved),
                    ("declined", PoaStatus::Declined),
                ],
            )?,
        })
    }
}

/// `initialize_wallet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeWallet {
    pub location_id: Option<String>,
}

/// `pay_wallet`: `total` includes `tip`; both at precision 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayWallet {
    pub barcode: String,
    pub currency: String,
    pub total: WireUint,
    pub tip: WireUint,
    pub pos_local_time: Option<String>,
    pub note: Option<String>,
}

/// `available_wallet_refund`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailableWalletRefund {
    pub transaction_id: String,
    pub pos_local_time: Option<String>,
}

/// `cancel_wallet_payment`: the seed gives it no identifier; ours are tolerated extras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelWalletPayment {
    pub transaction_id: Option<String>,
    pub barcode: Option<String>,
}

/// `log_cancel_wallet`. Its `total` is a String in the seed; an integer is tolerated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCancelWallet {
    pub barcode: Option<String>,
    pub total: Option<WireUint>,
    pub tip: Option<WireUint>,
    pub currency: Option<String>,
    pub reference: Option<String>,
    pub response_code: Option<String>,
    pub transaction_id: Option<String>,
    pub pos_local_time: Option<String>,
    pub error_message: Option<String>,
}

/// `refund_wallet_payment`: no amount, so everything still standing is refunded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundWalletPayment {
    pub transaction_id: String,
    pub pos_local_time: Option<String>,
    pub note: Option<String>,
}

impl InitializeWallet {
    pub fn read(value: &Value) -> Result<InitializeWallet, InstoreError> {
        let f = Fields::new(value, "")?;
        Ok(InitializeWallet {
            location_id: f.opt_str("location_id")?,
        })
    }
}

impl PayWallet {
    pub fn read(value: &Value) -> Result<PayWallet, InstoreError> {
        let f = Fields::new(value, "")?;
        Ok(PayWallet {
            barcode: f.str("barcode")?,
            currency: f.str("currency")?,
            total: f.uint("total")?,
            tip: f.opt_uint("tip")?.unwrap_or(Some(0)),
            pos_local_time: f.opt_str("pos_local_time")?,
            note: f.opt_str("note")?,
        })
    }
}

impl AvailableWalletRefund {
    pub fn read(value: &Value) -> Result<AvailableWalletRefund, InstoreError> {
        let f = Fields::new(value, "")?;
        Ok(AvailableWalletRefund {
            transaction_id: f.str("transaction_id")?,
            pos_local_time: f.opt_str("pos_local_time")?,
        })
    }
}

impl CancelWalletPayment {
    pub fn read(value: &Value) -> Result<CancelWalletPayment, InstoreError> {
        let f = Fields::new(value, "")?;
        Ok(CancelWalletPayment {
            transaction_id: f.opt_str("transaction_id")?,
            barcode: f.opt_str("barcode")?,
        })
    }
}

impl LogCancelWallet {
    pub fn read(value: &Value) -> Result<LogCancelWallet, InstoreError> {
        let f = Fields::new(value, "")?;
        Ok(LogCancelWallet {
            barcode: f.opt_str("barcode")?,
            total: f.opt_uint("total")?,
            tip: f.opt_uint("tip")?,
            currency: f.opt_str("currency")?,
            reference: f.opt_str("reference")?,
            response_code: f.opt_str("response_code")?,
            transaction_id: f.opt_str("transaction_id")?,
            pos_local_time: f.opt_str("pos_local_time")?,
            error_message: f.opt_str("error_message")?,
        })
    }
}

impl RefundWalletPayment {
    pub fn read(value: &Value) -> Result<RefundWalletPayment, InstoreError> {
        let f = Fields::new(value, "")?;
        Ok(RefundWalletPayment {
            transaction_id: f.str("transaction_id")?,
            pos_local_time: f.opt_str("pos_local_time")?,
            note: f.opt_str("note")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn value(text: &str) -> Value {
        parse(text.as_bytes()).unwrap().value
    }

    #[test]
    fn redeem_payload_of_the_worked_example() {
        let p = StoredValueProcess::read(&value(include_str!("../tests/vectors/7.1-payload.json")))
            .unwrap();
        let StoredValueProcess::Move {
            action,
            context,
            number,
            amount,
            session_id,
            reference,
            cvc,
            accounts,
        } = p
        else {
            panic!("not a movement");
        };
        assert_eq!(action, MoneyAction::Redeem);
        assert_eq!(context.request_id, "req-9a8b0001");
        assert_eq!(context.location_id, "LondonStore");
        assert_eq!(context.workstation_id.as_deref(), Some("POS-03"));
        assert_eq!(number.as_str(), "6280001234567895");
        assert_eq!(format!("{number:?}"), "CardNumber(****7895)");
        assert_eq!(amount.resolve().unwrap().1, 1220);
        assert_eq!(
            (session_id.as_str(), reference.as_str()),
            ("session-7c01", "order-2025-0001")
        );
        assert!(cvc.is_none() && accounts.is_empty());
    }

    #[test]
    fn cancel_and_refusals() {
        let p = StoredValueProcess::read(&value(include_str!("../tests/vectors/7.3-payload.json")))
            .unwrap();
        assert_eq!(p.action_name(), "Cancel");
        assert!(
            matches!(p, StoredValueProcess::Cancel { ref external_payment_id, .. } if external_payment_id == "svp-9c8d7e6f5a4b3c2d1e0f")
        );
        let e = StoredValueProcess::read(&value(
            r#"{"requestId":"r","locationId":"l","action":"Refund","number":"1"}"#,
        ))
        .unwrap_err();
        assert_eq!(
            (e.code, e.request_id.as_deref()),
            (ErrorCode::InvalidField, Some("r"))
        );
        let e = StoredValueProcess::read(&value(r#"{"requestId":"r","locationId":"l","action":"Load","number":"1","amount":{"amount":-5,"precision":2,"currency":"USD"},"session_id":"s","reference":"x"}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        let e = StoredValueProcess::read(&value(r#"{"locationId":"l"}"#)).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::MissingField, "payload.requestId is required")
        );
        let e =
            StoredValueProcess::read(&value(r#"{"requestId":5,"locationId":"l"}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
    }

    #[test]
    fn create_and_lookup() {
        let c = StoredValueCreate::read(&value(r#"{"requestId":"r","locationId":"l","type":"GiftCard","status":"Inactive","balance":{"amount":0,"precision":2,"currency":"USD"},"cvc":"123","issuer":null}"#)).unwrap();
        assert_eq!(
            (c.card_type, c.active, c.issuer.as_deref()),
            (CardType::GiftCard, false, None)
        );
        assert!(!format!("{c:?}").contains("123\""));
        for bad in ["Gift", "giftcard"] {
            let text = format!(
                r#"{{"requestId":"r","locationId":"l","type":"{bad}","status":"Active","balance":{{"amount":0,"precision":2,"currency":"USD"}}}}"#
            );
            assert_eq!(
                StoredValueCreate::read(&value(&text)).unwrap_err().code,
                ErrorCode::InvalidField
            );
        }
        let l = StoredValueLookup::read(&value(include_str!(
            "../tests/vectors/7.2-signed-payload.json"
        )))
        .unwrap();
        assert_eq!(
            (l.cart_key.as_str(), l.context.location_id.as_str()),
            ("3819232132", "Málaga-01")
        );
    }

    #[test]
    fn card_sets() {
        let accounts = |text: &str| {
            let v = value(&format!(
                r#"{{"requestId":"r","locationId":"l","number":"A","cartKey":"c","accounts":{text}}}"#
            ));
            StoredValueLookup::read(&v).unwrap().card_set()
        };
        let set = accounts(r#"[{"number":"B","paymentProcessorId":"664f"},{"number":"A","pin":"1","paymentProcessorId":"664f"},{"number":"C","paymentProcessorId":"664f"}]"#).unwrap();
        let numbers: Vec<&str> = set.cards.iter().map(|c| c.number.as_str()).collect();
        assert_eq!(numbers, ["A", "B", "C"]);
        assert_eq!(set.payment_processor_id.as_deref(), Some("664f"));
        assert_eq!(
            set.cards[0].pin.as_ref().map(SecretString::expose),
            Some("1")
        );
        assert_eq!(
            accounts(r#"[{"number":"B"},{"number":"C"}]"#)
                .unwrap()
                .payment_processor_id,
            None
        );
        assert_eq!(accounts(r#"[{"number":"B","paymentProcessorId":"1"},{"number":"C","paymentProcessorId":"2"}]"#).unwrap_err().code, ErrorCode::MixedProcessors);
        assert_eq!(
            accounts(r#"[{"number":"B","paymentProcessorId":"1"},{"number":"C"}]"#)
                .unwrap_err()
                .code,
            ErrorCode::MixedProcessors
        );
        assert_eq!(
            accounts(r#"[{"number":"B"},{"number":"B"}]"#)
                .unwrap_err()
                .code,
            ErrorCode::DuplicateAccount
        );
    }

    #[test]
    fn poa_and_wallet_requests() {
        let credit = PoaProcess::read(&value(r#"{"action":"Credit","account_number":"2342342342","authorized_user_ids":["234234"],"balance":{"amount":"1220","precision":"2","currency":"USD"}}"#)).unwrap();
        assert_eq!(credit.action, PoaAction::Credit);
        assert_eq!(
            credit.authorized_user_ids.as_deref(),
            Some(&["234234".to_string()][..])
        );
        assert_eq!(
            PoaProcess::read(&value(r#"{"action":"Credit","account_number":"1"}"#))
                .unwrap_err()
                .code,
            ErrorCode::MissingField
        );
        assert_eq!(
            PoaProcess::read(&value(r#"{"action":"Create","account_number":"1"}"#))
                .unwrap_err()
                .code,
            ErrorCode::MissingField
        );
        assert_eq!(
            PoaProcess::read(&value(r#"{"action":"Delete","account_number":"1"}"#))
                .unwrap_err()
                .code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            PoaProcess::read(&value(
                r#"{"action":"Inquiry","account_number":"1","authorized_user_ids":[1]}"#
            ))
            .unwrap_err()
            .code,
            ErrorCode::InvalidField
        );
        let log = PoaLogRecord::read(&value(r#"{"action":"Credit","account_number":"1","amount":{"amount":"1000","precision":"2","currency":"USD"},"session_id":"qe23","order_id":"0024242","status":"approved"}"#)).unwrap();
        assert_eq!(
            (log.status, log.order_id.as_deref()),
            (PoaStatus::Approved, Some("0024242"))
        );

        let pay = PayWallet::read(&value(r#"{"barcode":"123456789012345678901000","currency":"USD","total":16960,"pos_local_time":"2024-01-24 12:37:54","tip":300,"note":"payment"}"#)).unwrap();
        assert_eq!((pay.total, pay.tip), (Some(16_960), Some(300)));
        let pay =
            PayWallet::read(&value(r#"{"barcode":"1","currency":"USD","total":"100"}"#)).unwrap();
        assert_eq!(pay.tip, Some(0));
        assert_eq!(
            PayWallet::read(&value(r#"{"barcode":"1","currency":"USD","total":-1}"#))
                .unwrap_err()
                .code,
            ErrorCode::InvalidField
        );
        let log = LogCancelWallet::read(&value(r#"{"barcode":"b","total":"465500","tip":1,"currency":"USD","reference":"123456","response_code":"00","transaction_id":"t","pos_local_time":"p","error_message":"e"}"#)).unwrap();
        assert_eq!(log.total, Some(Some(465_500)));
        assert!(RefundWalletPayment::read(&value(r#"{"pos_local_time":"p"}"#)).is_err());
        assert_eq!(
            CancelWalletPayment::read(&value(r#"{"tenant_id":"t"}"#)).unwrap(),
            CancelWalletPayment {
                transaction_id: None,
                barcode: None
            }
        );
    }

    #[test]
    fn log_query() {
        let params = |q: &str| crate::verify::parse_query(q).unwrap();
        let q = StoredValueLogQuery::read(&params("requestId=r&locationId=l&limit=500&cursor=abc"))
            .unwrap();
        assert_eq!((q.limit, q.cursor.as_deref()), (500, Some("abc")));
        assert_eq!(
            StoredValueLogQuery::read(&params("requestId=r&locationId=l"))
                .unwrap()
                .limit,
            100
        );
        for bad in [
            "requestId=r",
            "locationId=l",
            "requestId=r&locationId=l&limit=0",
            "requestId=r&locationId=l&limit=501",
            "requestId=r&locationId=l&limit=01",
        ] {
            assert!(StoredValueLogQuery::read(&params(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_hash_is_over_the_js_form() {
        let compact = value(r#"{"a":"á","n":1}"#);
        let pretty = value("{\n  \"a\": \"\\u00e1\",\n  \"n\": 1\n}");
        assert_eq!(request_hash(&compact, b"k"), request_hash(&pretty, b"k"));
        assert_eq!(
            request_hash(&compact, b"k"),
            sha256_hex("{\"a\":\"á\",\"n\":1}".as_bytes())
        );
        assert_ne!(
            request_hash(&compact, b"k"),
            request_hash(&value(r#"{"n":1,"a":"á"}"#), b"k")
        );
    }

    #[test]
    fn request_hash_keys_the_pins_and_cvcs() {
        let body = r#"{"number":"1","pin":"1234","accounts":[{"number":"2","pin":"0000"}],"card":{"cvc":"123"},"n":{"pin":5}}"#;
        let keyed =
            |k: &[u8], s: &str| format!("hmac-sha256:{}", to_hex(&hmac_sha256(k, s.as_bytes())));
        let expected = format!(
            r#"{{"number":"1","pin":"{}","accounts":[{{"number":"2","pin":"{}"}}],"card":{{"cvc":"{}"}},"n":{{"pin":5}}}}"#,
            keyed(b"k", "1234"),
            keyed(b"k", "0000"),
            keyed(b"k", "123"),
        );
        assert_eq!(
            request_hash(&value(body), b"k"),
            sha256_hex(expected.as_bytes())
        );
        // Without the key, no guess of the PIN rebuilds the stored hash.
        assert_ne!(
            request_hash(&value(body), b"k"),
            sha256_hex(body.as_bytes())
        );
        assert_ne!(
            request_hash(&value(body), b"k"),
            request_hash(&value(body), b"j")
        );
        // Another PIN is another request (409 under the same id).
        let other = body.replace("0000", "0001");
        assert_ne!(
            request_hash(&value(body), b"k"),
            request_hash(&value(&other), b"k")
        );
    }
}
