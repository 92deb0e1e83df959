//! Request, notification and response bodies (protocol sections 5, 6 and 7).
//!
//! Parsing is tolerant where the processor evolves (unknown fields are ignored, enums are open,
//! optional objects may be absent or null) and strict where money is concerned (amounts are exact,
//! a currency must be a string). The caller keeps the raw body bytes, so nothing ignored here is
//! lost.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::amount::WireAmount;

/// Defines an open enum: the known values as variants, plus `Other(String)` for values added by
/// the processor after this code was written. Unknown strings become `Other` instead of failing
/// the whole request, because refusing a card payment over a new `entry_mode` would be worse than
/// not recognising it.
///
/// (De)serialized as the plain string. Build values with `From<&str>`/`From<String>`/`parse`,
/// which map known strings to their variant (`Other("PURCHASE")` built by hand would not compare
/// equal to `Purchase`).
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                #[doc = concat!("`", $text, "`")]
                $variant,
            )+
            /// A value not known to this build, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The known wire values, in declaration order.
            pub const KNOWN: &'static [&'static str] = &[$($text),+];

            /// The wire string (for `Other`, the string as received).
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }

            /// Whether this is one of the known values.
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }

            fn from_known(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::from_known(s).unwrap_or_else(|| Self::Other(s.to_owned()))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::from_known(&s).unwrap_or(Self::Other(s))
            }
        }

        impl FromStr for $name {
            type Err = Infallible;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self::from(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::open_enum_schema(Self::KNOWN)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }

                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::from(v))
                    }

                    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<$name, E> {
                        Ok($name::from(v))
                    }
                }
                deserializer.deserialize_string(V)
            }
        }
    };
}

open_enum! {
    /// `transaction.type`.
    TransactionType {
        Purchase => "PURCHASE",
        Withdrawal => "WITHDRAWAL",
        Extracash => "EXTRACASH",
        Cashback => "CASHBACK",
        BalanceInquiry => "BALANCE_INQUIRY",
        Refund => "REFUND",
        Payment => "PAYMENT",
        ReversalPurchase => "REVERSAL_PURCHASE",
        ReversalWithdrawal => "REVERSAL_WITHDRAWAL",
        ReversalExtracash => "REVERSAL_EXTRACASH",
        ReversalRefund => "REVERSAL_REFUND",
        ReversalPayment => "REVERSAL_PAYMENT",
    }
}

open_enum! {
    /// `transaction.point_type`.
    PointType {
        Pos => "POS",
        Ecommerce => "ECOMMERCE",
        Atm => "ATM",
        Moto => "MOTO",
    }
}

open_enum! {
    /// `transaction.entry_mode`.
    EntryMode {
        Manual => "MANUAL",
        Chip => "CHIP",
        Contactless => "CONTACTLESS",
        CredentialOnFile => "CREDENTIAL_ON_FILE",
        MagStripe => "MAG_STRIPE",
        // `OTHER` is a real wire value here, distinct from the catch-all `Other(String)`.
        OtherMode => "OTHER",
        Unknown => "UNKNOWN",
    }
}

open_enum! {
    /// `transaction.origin`.
    Origin {
        Domestic => "DOMESTIC",
        International => "INTERNATIONAL",
    }
}

open_enum! {
    /// `transaction.source`.
    Source {
        Online => "ONLINE",
        Clearing => "CLEARING",
        Purge => "PURGE",
        Manual => "MANUAL",
        ChargebackManual => "CHARGEBACK_MANUAL",
        TrustCreditManual => "TRUST_CREDIT_MANUAL",
    }
}

open_enum! {
    /// `card.product_type`.
    ProductType {
        Prepaid => "PREPAID",
        Debit => "DEBIT",
        Credit => "CREDIT",
    }
}

open_enum! {
    /// `card.provider`.
    Provider {
        Mastercard => "MASTERCARD",
        Visa => "VISA",
    }
}

/// A status string that is not one of the known values of a closed enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown status value")]
pub struct UnknownValueError;

fn unknown_value(_: &str) -> UnknownValueError {
    UnknownValueError
}

/// Defines a closed enum: only the listed values exist. Each variant is its name in
/// SCREAMING_SNAKE_CASE on the wire ((de)serialized, `as_str`, `Display`); `parse` refuses
/// any other string with [`UnknownValueError`].
macro_rules! closed_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$variant_meta:meta])* $variant:ident,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[derive(strum::IntoStaticStr, strum::EnumString, strum::Display)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        #[strum(
            serialize_all = "SCREAMING_SNAKE_CASE",
            parse_err_ty = UnknownValueError,
            parse_err_fn = unknown_value
        )]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// The wire string.
            pub fn as_str(&self) -> &'static str {
                self.into()
            }
        }
    };
}

closed_enum! {
    /// Which way money moves on the user's account.
    Direction {
        /// Money leaves the user's account.
        Debit,
        /// Money arrives on the user's account.
        Credit,
    }
}

impl TransactionType {
    /// Direction implied by the type, used on the bare authorization route (which has no
    /// `/debit` or `/credit` suffix) and for notifications.
    ///
    /// `None` for `BALANCE_INQUIRY` (moves no money) and for unknown types: guessing a direction
    /// for a type we do not know could move money the wrong way.
    pub fn direction(&self) -> Option<Direction> {
        use TransactionType::*;
        match self {
            Purchase | Withdrawal | Extracash | Cashback | ReversalRefund | ReversalPayment => {
                Some(Direction::Debit)
            }
            Refund | Payment | ReversalPurchase | ReversalWithdrawal | ReversalExtracash => {
                Some(Direction::Credit)
            }
            BalanceInquiry | Other(_) => None,
        }
    }
}

/// A body that could not be parsed. Carries serde's short message (with line and column); the
/// amount parser's own messages never repeat body content, and neither does an id refused by
/// [`check_id`] (the message names the field only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    message: String,
    id_field: Option<&'static str>,
}

impl WireError {
    /// A refusal for `message`, naming no id field.
    pub(crate) fn new(message: String) -> WireError {
        WireError {
            message,
            id_field: None,
        }
    }

    /// Human-readable reason, suitable for a 400 answer.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The field, when the body parsed but one of its ids breaks the rule of [`check_id`]
    /// (e.g. `"transaction.id"`). A closed set of names, fit for a metrics label.
    pub fn id_field(&self) -> Option<&'static str> {
        self.id_field
    }
}

/// Longest processor id accepted, in bytes: the same bound as `x-idempotency-key`, far below
/// what an indexed text column can hold (a Postgres btree entry fails at about 2.7 kB, which
/// would turn every resend of the same request into another failure).
pub const ID_BYTES_MAX: usize = 255;

/// Whether `id` is acceptable as a processor id (transaction, original transaction, card and
/// user ids, notification event ids and idempotency keys): 1 to [`ID_BYTES_MAX`] bytes of
/// visible ASCII, `!` to `~`.
///
/// Tolerant of any punctuation the processor may use (`/`, `+`, `=`, `#`, `%`, quotes, ...);
/// strict on what can forge or hide text where ids end up: control characters (newlines,
/// ANSI escapes), spaces (a `key=value` log line read as two fields), and anything outside
/// ASCII (bidirectional overrides, line separators, look-alike letters, U+FFFD). An id that
/// passes can be written to a log unquoted and typed back into a URL.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= ID_BYTES_MAX && id.bytes().all(|b| b.is_ascii_graphic())
}

/// [`is_valid_id`], as an error naming `field` (never repeating the value).
pub fn check_id(field: &'static str, id: &str) -> Result<(), WireError> {
    if is_valid_id(id) {
        return Ok(());
    }
    Err(WireError {
        message: format!(
            "{field} must be 1 to {ID_BYTES_MAX} visible ASCII characters (letters, digits, punctuation; no spaces or control characters)"
        ),
        id_field: Some(field),
    })
}

/// Deepest nesting of objects and arrays accepted in a body. The processor's bodies nest
/// four levels; the parser's own limit (128) does not apply to fields it skips, so without
/// this a body of tens of thousands of levels would be accepted and stored, and break every
/// later reader of the stored request.
pub const MAX_DEPTH: usize = 32;

/// Refuses bodies that are not UTF-8, bodies nested deeper than [`MAX_DEPTH`], and strings
/// holding U+0000 (written `\u0000`: a raw NUL byte is not valid JSON anyway). serde_json
/// checks UTF-8 only in the strings it reads: a field it skips (`extra_data`, an unknown
/// field) would keep bytes that are not text in the stored request, and break its later
/// readers. A NUL can be neither stored in a Postgres text column nor meant by the
/// processor; refusing it everywhere keeps both backends alike and turns what would be an
/// endless "not stored, send again" into a clear 400. Linear scans, before parsing.
fn check_body(body: &[u8]) -> Result<(), WireError> {
    let refuse = |message: String| {
        Err(WireError {
            message,
            id_field: None,
        })
    };
    if let Err(e) = std::str::from_utf8(body) {
        return refuse(format!(
            "body is not valid UTF-8 (byte {})",
            e.valid_up_to() + 1
        ));
    }
    let (mut depth, mut in_string, mut i) = (0usize, false, 0usize);
    while i < body.len() {
        let b = body[i];
        i += 1;
        if in_string {
            match b {
                b'\\' => {
                    if body.get(i) == Some(&b'u') && body.get(i + 1..i + 5) == Some(b"0000") {
                        return refuse("strings must not contain U+0000".into());
                    }
                    i += 1;
                }
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return refuse(format!("JSON nested deeper than {MAX_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a body is one [`TransactionRequest::from_slice`] and [`Notification::from_slice`]
/// refuse before parsing (not UTF-8, too deep, or a U+0000 in a string). A caller that falls back to a
/// looser parse must not fall back for these.
pub fn refused_before_parsing(body: &[u8]) -> bool {
    check_body(body).is_err()
}

/// Why a JSON body is refused before it is parsed (not UTF-8, a U+0000 in a string: no
/// store can hold it, nested too deep), or `None`.
pub fn body_refusal(body: &[u8]) -> Option<String> {
    check_body(body).err().map(|e| e.message)
}

impl From<serde_json::Error> for WireError {
    fn from(e: serde_json::Error) -> Self {
        WireError {
            message: e.to_string(),
            id_field: None,
        }
    }
}

/// Body of authorizations and adjustments (section 5).
///
/// Unknown fields (`installments`, `extra_data`, ...) are ignored: the caller stores the raw
/// bytes. Optional objects may be absent or null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionRequest {
    /// What happened, according to the processor.
    pub transaction: TransactionInfo,
    /// Where it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<Merchant>,
    /// The card used; may be one we never registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardRef>,
    /// The cardholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    /// The amounts; `amount.local` is the cardholder's money.
    pub amount: Amounts,
}

impl TransactionRequest {
    /// Parses a raw request body (UTF-8 throughout, at most [`MAX_DEPTH`] levels deep, no
    /// U+0000 in strings; a key repeated in an object this type reads is refused), then
    /// checks its ids ([`TransactionRequest::check_ids`]).
    pub fn from_slice(body: &[u8]) -> Result<Self, WireError> {
        check_body(body)?;
        let parsed: Self = serde_json::from_slice(body)?;
        parsed.check_ids()?;
        Ok(parsed)
    }

    /// Every id this request carries that is stored or logged follows [`check_id`]:
    /// `transaction.id`, `transaction.original_transaction_id`, `card.id`, `user.id`.
    /// (`merchant.id` is neither: it stays in the stored raw request only.)
    pub fn check_ids(&self) -> Result<(), WireError> {
        self.transaction
            .check_ids("transaction.id", "transaction.original_transaction_id")?;
        if let Some(c) = &self.card {
            check_id("card.id", &c.id)?;
        }
        if let Some(u) = &self.user {
            check_id("user.id", &u.id)?;
        }
        Ok(())
    }
}

impl TransactionInfo {
    fn check_ids(&self, id: &'static str, original: &'static str) -> Result<(), WireError> {
        check_id(id, &self.id)?;
        if let Some(o) = &self.original_transaction_id {
            check_id(original, o)?;
        }
        Ok(())
    }
}

/// `transaction` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransactionInfo {
    /// The processor's transaction id (`ctx-...`), 1 to 255 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub id: String,
    /// `transaction.type`.
    #[serde(rename = "type")]
    pub kind: TransactionType,
    /// `POS`, `ECOMMERCE`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_type: Option<PointType>,
    /// `CHIP`, `CONTACTLESS`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_mode: Option<EntryMode>,
    /// `DOMESTIC` or `INTERNATIONAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// `ONLINE`, `CLEARING`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Country of the transaction (ISO 3166 alpha-3 in the processor's examples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Terminal's local time without offset; store as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_date_time: Option<String>,
    /// For adjustments: the authorization this one corrects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_transaction_id: Option<String>,
}

/// `merchant` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Merchant {
    /// Merchant id at the acquirer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Merchant category code, as a string (`"5045"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcc: Option<String>,
    /// Merchant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Terminal id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    /// Merchant country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Merchant city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Merchant address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// `card` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardRef {
    /// The processor's card id (`crd-...`).
    pub id: String,
    /// `PREPAID`, `DEBIT` or `CREDIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_type: Option<ProductType>,
    /// `MASTERCARD` or `VISA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// Last four digits of the PAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_four: Option<String>,
}

/// `user` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserRef {
    /// The processor's user id (`usr-...`).
    pub id: String,
}

/// `amount` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Amounts {
    /// The cardholder's money, in the cardholder's currency: what moves on the account.
    pub local: MoneyField,
    /// In the merchant's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<MoneyField>,
    /// In the network's settlement currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<MoneyField>,
    /// Breakdown lines (`BASE`, `TAX`, `FEE`, ...) adding up to the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<AmountDetail>>,
}

/// A total and its currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoneyField {
    /// Exact amount as sent.
    pub total: WireAmount,
    /// Currency code as sent; must be a JSON string. Whether it is a valid ISO 4217 code is
    /// decided by the caller.
    pub currency: String,
}

/// One line of `amount.details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AmountDetail {
    /// `BASE`, `TAX`, `FEE`, `EXTRACASH`, `DISCOUNT`, ... (kept as a plain string).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Currency of the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Amount of the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<WireAmount>,
    /// Label of the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Notification body (section 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    /// `approved-authorization-advice`, `authorization-advice`, or another event.
    pub event_id: String,
    /// The transaction the event is about.
    pub event_detail: EventDetail,
    /// Dedupe key for notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `event_detail` of a notification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventDetail {
    /// Same shape as in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionInfo>,
    /// The cardholder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    /// The card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardRef>,
    /// The merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<Merchant>,
    /// The amounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amounts>,
    /// The processor's final status (`APPROVED` / `REJECTED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Reason, e.g. `CLIENT_TIMEOUT`, `INSUFFICIENT_FUNDS` (open set, kept as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_detail: Option<String>,
}

/// The processor's final word on a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The transaction is effective.
    Approved,
    /// The money never left.
    Rejected,
}

/// `event_id` of the notification carrying an approved verdict.
pub const EVENT_APPROVED_AUTHORIZATION_ADVICE: &str = "approved-authorization-advice";
/// `event_id` of the notification carrying a (usually rejected) verdict in `event_detail.status`.
pub const EVENT_AUTHORIZATION_ADVICE: &str = "authorization-advice";

impl Notification {
    /// The processor's advice about `request`: approved (`approved-authorization-advice`,
    /// status and detail `APPROVED`) or not (`authorization-advice`, status `REJECTED`
    /// with `rejected_detail`).
    pub fn advice(
        request: TransactionRequest,
        approved: bool,
        rejected_detail: &str,
        idempotency_key: String,
    ) -> Notification {
        let (event_id, status, detail) = if approved {
            (EVENT_APPROVED_AUTHORIZATION_ADVICE, "APPROVED", "APPROVED")
        } else {
            (EVENT_AUTHORIZATION_ADVICE, "REJECTED", rejected_detail)
        };
        Notification {
            event_id: event_id.into(),
            event_detail: EventDetail {
                transaction: Some(request.transaction),
                user: request.user,
                card: request.card,
                merchant: request.merchant,
                amount: Some(request.amount),
                status: Some(status.into()),
                status_detail: Some(detail.into()),
                extra_detail: None,
            },
            idempotency_key: Some(idempotency_key),
        }
    }

    /// Parses a raw notification body (UTF-8 throughout, at most [`MAX_DEPTH`] levels deep,
    /// no U+0000 in strings), then checks its ids ([`Notification::check_ids`]).
    pub fn from_slice(body: &[u8]) -> Result<Self, WireError> {
        check_body(body)?;
        let parsed: Self = serde_json::from_slice(body)?;
        parsed.check_ids()?;
        Ok(parsed)
    }

    /// `event_id`, a non-empty `idempotency_key`, and the ids of `event_detail`
    /// (`transaction.id`, `transaction.original_transaction_id`, `card.id`, `user.id`)
    /// follow [`check_id`]. An empty `idempotency_key` counts as absent (the header's is used).
    pub fn check_ids(&self) -> Result<(), WireError> {
        check_id("event_id", &self.event_id)?;
        if let Some(k) = self.idempotency_key.as_deref().filter(|k| !k.is_empty()) {
            check_id("idempotency_key", k)?;
        }
        let d = &self.event_detail;
        if let Some(t) = &d.transaction {
            t.check_ids(
                "event_detail.transaction.id",
                "event_detail.transaction.original_transaction_id",
            )?;
        }
        if let Some(c) = &d.card {
            check_id("event_detail.card.id", &c.id)?;
        }
        if let Some(u) = &d.user {
            check_id("event_detail.user.id", &u.id)?;
        }
        Ok(())
    }

    /// The verdict this notification carries, if any.
    ///
    /// * `approved-authorization-advice`: [`Verdict::Approved`].
    /// * `authorization-advice`: [`Verdict::Approved`] only when `event_detail.status` is exactly
    ///   `"APPROVED"`; otherwise (including absent or unrecognised status) [`Verdict::Rejected`],
    ///   since this event means a rejection unless it says otherwise.
    /// * any other event: `None` (stored, no ledger effect).
    pub fn verdict(&self) -> Option<Verdict> {
        match self.event_id.as_str() {
            EVENT_APPROVED_AUTHORIZATION_ADVICE => Some(Verdict::Approved),
            EVENT_AUTHORIZATION_ADVICE => match self.event_detail.status.as_deref() {
                Some("APPROVED") => Some(Verdict::Approved),
                _ => Some(Verdict::Rejected),
            },
            _ => None,
        }
    }
}

closed_enum! {
    /// `status` of an authorization answer.
    Status {
        /// `APPROVED`
        Approved,
        /// `REJECTED`
        Rejected,
    }
}

closed_enum! {
    /// `status_detail` of an authorization or adjustment answer.
    StatusDetail {
        /// `APPROVED`
        Approved,
        /// `INSUFFICIENT_FUNDS`
        InsufficientFunds,
        /// `INVALID_MERCHANT`: blocked merchant.
        InvalidMerchant,
        /// `INVALID_AMOUNT`: amount refused by a rule.
        InvalidAmount,
        /// `SYSTEM_ERROR`
        SystemError,
        /// `OTHER`
        Other,
    }
}

/// Our answer to an authorization (section 6).
///
/// Serialize with `serde_json::to_vec`; fields come out in the order status, status_detail,
/// message, balance, and `balance` is omitted when `None`. Sign exactly the bytes produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthorizationResponse {
    /// Approve or reject.
    pub status: Status,
    /// Why.
    pub status_detail: StatusDetail,
    /// Human-readable message.
    pub message: String,
    /// Only for `BALANCE_INQUIRY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
}

/// Balance returned to a `BALANCE_INQUIRY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Balance {
    /// Exact decimal as a string, e.g. `"982345.12"`.
    pub total: String,
    /// ISO 4217 code.
    pub currency: String,
}

/// Our answer to an adjustment (section 6): the movement is booked whatever this says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdjustmentResponse {
    /// `APPROVED`, or another value to report a problem on our side.
    pub status_detail: StatusDetail,
    /// Human-readable message.
    pub message: String,
}
