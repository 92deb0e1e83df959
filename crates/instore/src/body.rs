//! Every body we emit: acknowledgements, callbacks (section 1.6), the log, and the seed's
//! synchronous responses of the POA and wallet actions. Each is written through
//! [`ObjectBuilder`], so `JS(parse(body)) == body` holds for all of them.

use crate::decision::Outcome;
use crate::json::{ObjectBuilder, Value, js};
use crate::money::{Amount, WALLET_PRECISION};
use crate::payload::{CardNumber, CardType, PoaAction, PoaLogRecord, card_status_str};

/// The two ids a movement carries, written together in every body that names one.
trait ExternalIds {
    fn external_ids<'a>(
        self,
        transaction: impl Into<Option<&'a str>>,
        payment: impl Into<Option<&'a str>>,
    ) -> Self;
}

impl ExternalIds for ObjectBuilder {
    fn external_ids<'a>(
        self,
        transaction: impl Into<Option<&'a str>>,
        payment: impl Into<Option<&'a str>>,
    ) -> ObjectBuilder {
        self.field("external_transaction_id", transaction.into())
            .field("external_payment_id", payment.into())
    }
}

/// `{"requestId":"<payload.requestId>"}`: the acknowledgement of an accepted envelope.
pub fn ack(request_id: &str) -> String {
    ObjectBuilder::new().field("requestId", request_id).to_js()
}

/// `{"results":[{"requestId":..,"paymentProcessorId"?:..}]}`: the acknowledgement of
/// `storedvaluecard_process` with pre-loaded accounts. We answer for our one request.
pub fn ack_results(request_id: &str, payment_processor_id: Option<&str>) -> String {
    let one = ObjectBuilder::new()
        .field("requestId", request_id)
        .field_opt("paymentProcessorId", payment_processor_id);
    ObjectBuilder::new()
        .field("results", vec![one.build()])
        .to_js()
}

/// The stored-value callback actions; `Create` and `Lookup` are our names for
/// `storedvaluecard` and `storedvaluecard/:number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAction {
    Create,
    Lookup,
    Load,
    Redeem,
    Cancel,
}

impl CallbackAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackAction::Create => "Create",
            CallbackAction::Lookup => "Lookup",
            CallbackAction::Load => "Load",
            CallbackAction::Redeem => "Redeem",
            CallbackAction::Cancel => "Cancel",
        }
    }
}

/// A stored-value callback body: `requestId`, `action`, `result`, `status`, `code`,
/// `error`, `data`.
pub fn callback(request_id: &str, action: CallbackAction, outcome: Outcome, data: Value) -> String {
    ObjectBuilder::new()
        .field("requestId", request_id)
        .field("action", action.as_str())
        .field("result", outcome.result())
        .field("status", outcome.status())
        .field("code", outcome.code())
        .field("error", outcome.error())
        .field("data", data)
        .to_js()
}

/// `data` of a `Create` callback. On a decline the card does not exist: `number`,
/// `balance` and the ids are null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateData<'a> {
    pub number: Option<&'a CardNumber>,
    pub card_type: CardType,
    pub active: bool,
    pub balance: Option<Amount>,
    pub issuer: Option<&'a str>,
    pub customer_id: Option<&'a str>,
    pub external_transaction_id: Option<&'a str>,
    pub external_payment_id: Option<&'a str>,
}

impl CreateData<'_> {
    pub fn to_value(&self) -> Value {
        ObjectBuilder::new()
            .field("number", self.number.map(CardNumber::as_str))
            .field("type", self.card_type.as_str())
            .field("status", card_status_str(self.active))
            .field("balance", self.balance.map(Amount::to_value))
            .field("issuer", self.issuer)
            .field("customer_id", self.customer_id)
            .external_ids(self.external_transaction_id, self.external_payment_id)
            .build()
    }
}

/// One card in a lookup's `data` (or one element of `data.accounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupCard<'a> {
    pub number: &'a CardNumber,
    pub card_type: CardType,
    pub active: bool,
    pub balance: Amount,
}

impl LookupCard<'_> {
    fn builder(&self) -> ObjectBuilder {
        ObjectBuilder::new()
            .field("number", self.number.as_str())
            .field("type", self.card_type.as_str())
            .field("status", card_status_str(self.active))
            .field("balance", self.balance.to_value())
    }

    /// An element of `data.accounts`.
    pub fn to_value(&self) -> Value {
        self.builder().build()
    }
}

/// An element of `data.accounts` for a number that failed.
pub fn lookup_account_failure(number: &CardNumber, outcome: Outcome) -> Value {
    ObjectBuilder::new()
        .field("number", number.as_str())
        .field("result", outcome.result())
        .field("error", outcome.error())
        .field("code", outcome.code())
        .build()
}

/// `data` of a `Lookup` callback. On a decline only `number` and `cartKey` are told: a card
/// of another tenant must read exactly as an unknown one.
pub fn lookup_data(
    number: &CardNumber,
    card: Option<&LookupCard<'_>>,
    cart_key: &str,
    accounts: Option<Vec<Value>>,
) -> Value {
    let b = match card {
        Some(c) => c.builder(),
        None => ObjectBuilder::new().field("number", number.as_str()),
    };
    b.field("cartKey", cart_key)
        .field_opt("accounts", accounts.map(Value::from))
        .build()
}

/// One card used by a split Redeem: an element of `data.accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegData<'a> {
    pub number: &'a str,
    pub amount: Amount,
    pub balance: Amount,
    pub external_transaction_id: &'a str,
}

/// `data` of a `Load` or `Redeem` callback. A decline carries the requested amount, the
/// current balance when the card may be told (`None` for an unknown card) and null ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementData<'a> {
    pub number: &'a CardNumber,
    /// The processed (or requested) amount; `None` when it could not be read as money.
    pub amount: Option<Amount>,
    pub balance: Option<Amount>,
    pub external_transaction_id: Option<&'a str>,
    pub external_payment_id: Option<&'a str>,
    pub session_id: &'a str,
    pub reference: &'a str,
    /// Present for a request with pre-loaded accounts.
    pub accounts: Option<Vec<LegData<'a>>>,
}

impl MovementData<'_> {
    pub fn to_value(&self) -> Value {
        let accounts = self.accounts.as_ref().map(|legs| {
            Value::from(
                legs.iter()
                    .map(|l| {
                        ObjectBuilder::new()
                            .field("number", l.number)
                            .field("amount", l.amount.to_value())
                            .field("balance", l.balance.to_value())
                            .field("external_transaction_id", l.external_transaction_id)
                            .build()
                    })
                    .collect::<Vec<_>>(),
            )
        });
        ObjectBuilder::new()
            .field("number", self.number.as_str())
            .field("amount", self.amount.map(Amount::to_value))
            .field("balance", self.balance.map(Amount::to_value))
            .external_ids(self.external_transaction_id, self.external_payment_id)
            .field("session_id", self.session_id)
            .field("reference", self.reference)
            .field_opt("accounts", accounts)
            .build()
    }
}

/// `data` of a `Cancel` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelData<'a> {
    pub number: &'a CardNumber,
    pub amount: Option<Amount>,
    pub balance: Option<Amount>,
    /// The reversing movement's id (the original reversal's when already cancelled).
    pub external_transaction_id: Option<&'a str>,
    /// The cancelled operation's id, as requested.
    pub external_payment_id: &'a str,
    pub original_external_transaction_id: &'a str,
    pub already_cancelled: bool,
}

impl CancelData<'_> {
    pub fn to_value(&self) -> Value {
        ObjectBuilder::new()
            .field("number", self.number.as_str())
            .field("amount", self.amount.map(Amount::to_value))
            .field("balance", self.balance.map(Amount::to_value))
            .external_ids(self.external_transaction_id, self.external_payment_id)
            .field(
                "original_external_transaction_id",
                self.original_external_transaction_id,
            )
            .field("already_cancelled", self.already_cancelled)
            .build()
    }
}

/// One entry of the stored-value log, newest first; `amount` is signed from the card's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// RFC 3339 UTC with milliseconds, as the store formats it.
    pub created_at: &'a str,
    pub action: CallbackAction,
    pub amount: Amount,
    pub balance: Amount,
    pub external_transaction_id: &'a str,
    pub external_payment_id: &'a str,
    pub reference: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub location_id: &'a str,
    pub workstation_id: Option<&'a str>,
}

/// The `storedvaluelog/:number` response (section 2.5).
pub fn log_body(
    request_id: &str,
    number: &CardNumber,
    balance: Amount,
    entries: &[LogEntry<'_>],
    next_cursor: Option<&str>,
) -> String {
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            ObjectBuilder::new()
                .field("created_at", e.created_at)
                .field("action", e.action.as_str())
                .field("amount", e.amount.to_value())
                .field("balance", e.balance.to_value())
                .external_ids(e.external_transaction_id, e.external_payment_id)
                .field("reference", e.reference)
                .field("session_id", e.session_id)
                .field("locationId", e.location_id)
                .field("workstationId", e.workstation_id)
                .build()
        })
        .collect();
    ObjectBuilder::new()
        .field("requestId", request_id)
        .field("number", number.as_str())
        .field("balance", balance.to_value())
        .field("entries", entries)
        .field("next_cursor", next_cursor)
        .to_js()
}

/// Starts a synchronous body; in envelope mode the seed's body is preceded by `requestId`.
fn start(request_id: Option<&str>) -> ObjectBuilder {
    ObjectBuilder::new().field_opt("requestId", request_id)
}

/// A body of ours written again for another request of the same operation: `requestId`
/// first when `request_id` is given (an envelope), none for a bare request, the rest as it
/// was. `None` when `body` is not one of our objects.
pub fn for_request(body: &[u8], request_id: Option<&str>) -> Option<String> {
    let Value::Object(members) = crate::json::parse(body).ok()?.value else {
        return None;
    };
    let mut out = start(request_id).build();
    if let Value::Object(out_members) = &mut out {
        out_members.extend(members.into_iter().filter(|(name, _)| name != "requestId"));
    }
    Some(js(&out))
}

/// A `payonaccount/process` response. Members are written only when given, in the seed's
/// order; a decline adds `error` and `code` after `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoaResponse<'a> {
    pub request_id: Option<&'a str>,
    pub action: PoaAction,
    pub account_number: &'a CardNumber,
    pub company_name: Option<&'a str>,
    pub authorized_user_ids: Option<&'a [String]>,
    pub authorized_user_id: Option<&'a str>,
    /// The amount owed.
    pub balance: Option<Amount>,
    pub credit_limit: Option<Amount>,
    pub outcome: Outcome,
}

impl PoaResponse<'_> {
    pub fn to_js(&self) -> String {
        let ids = self
            .authorized_user_ids
            .map(|ids| Value::from(ids.iter().map(Value::from).collect::<Vec<_>>()));
        let b = start(self.request_id)
            .field("action", self.action.as_str())
            .field("account_number", self.account_number.as_str())
            .field_opt("company_name", self.company_name)
            .field_opt("authorized_user_ids", ids)
            .field_opt("authorized_user_id", self.authorized_user_id)
            .field_opt("balance", self.balance.map(Amount::to_poa_value))
            .field_opt("credit_limit", self.credit_limit.map(Amount::to_poa_value))
            .field("status", self.outcome.status());
        match self.outcome.0 {
            None => b.to_js(),
            Some(_) => b
                .field("error", self.outcome.error())
                .field("code", self.outcome.code())
                .to_js(),
        }
    }
}

fn poa_log_fields(b: ObjectBuilder, record: &PoaLogRecord) -> ObjectBuilder {
    b.field("action", record.action.as_str())
        .field("account_number", record.account_number.as_str())
        .field_opt("company_name", record.company_name.as_deref())
        .field_opt("authorized_user_id", record.authorized_user_id.as_deref())
        .field_opt("amount", record.amount.as_ref().map(|a| a.to_poa_value()))
        .field_opt("session_id", record.session_id.as_deref())
        .field_opt("order_id", record.order_id.as_deref())
        .field("status", record.status.as_str())
}

/// The `payonaccountlog` POST response: the stored record, echoed.
pub fn poa_log_echo(request_id: Option<&str>, record: &PoaLogRecord) -> String {
    poa_log_fields(start(request_id), record).to_js()
}

/// The `payonaccountlog/` GET response: the records, newest first, each with its
/// `received_at`.
pub fn poa_log_list(account_number: &CardNumber, logs: &[(PoaLogRecord, String)]) -> String {
    let logs: Vec<Value> = logs
        .iter()
        .map(|(r, at)| {
            poa_log_fields(ObjectBuilder::new(), r)
                .field("received_at", at.as_str())
                .build()
        })
        .collect();
    ObjectBuilder::new()
        .field("account_number", account_number.as_str())
        .field("logs", logs)
        .to_js()
}

/// `{"result","error","code"}`, the answer of `initialize_wallet`, with the extra members
/// of `available_wallet_refund` (`total`), `cancel_wallet_payment` and `log_cancel_wallet`
/// (`reversed`) when given.
pub fn wallet_status(
    request_id: Option<&str>,
    outcome: Outcome,
    total: Option<Amount>,
    reversed: Option<bool>,
) -> String {
    start(request_id)
        .field("result", outcome.result())
        .field("error", outcome.error())
        .field("code", outcome.code())
        .field_opt("total", total.map(wallet_units))
        .field_opt("reversed", reversed)
        .to_js()
}

/// A wallet amount as the seed's responses write it: a string of units at precision 2.
fn wallet_units(a: Amount) -> Value {
    // Wallet amounts were read at precision 2, so they are always exact at it; a currency
    // with more decimals still gets its exact minor units rather than a rounded figure.
    Value::from(
        a.at_precision(WALLET_PRECISION)
            .unwrap_or_else(|| a.minor.to_string()),
    )
}

/// The merchant fields every wallet payment answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalletMerchant<'a> {
    pub merchant_id: &'a str,
    pub terminal_id: &'a str,
    pub method: &'a str,
}

/// The `pay_wallet` response. A decline has null `transaction_id` and amounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayWalletResponse<'a> {
    pub request_id: Option<&'a str>,
    pub transaction_id: Option<&'a str>,
    pub total: Option<Amount>,
    pub tip: Option<Amount>,
    pub subtotal: Option<Amount>,
    pub merchant: WalletMerchant<'a>,
    pub pos_local_time: Option<&'a str>,
    pub outcome: Outcome,
}

impl PayWalletResponse<'_> {
    pub fn to_js(&self) -> String {
        start(self.request_id)
            .field("transaction_id", self.transaction_id)
            .field("total", self.total.map(wallet_units))
            .field("tip", self.tip.map(wallet_units))
            .field("subtotal", self.subtotal.map(wallet_units))
            .field("merchant_id", self.merchant.merchant_id)
            .field("terminal_id", self.merchant.terminal_id)
            .field("method", self.merchant.method)
            .field("pos_local_time", self.pos_local_time)
            .field("result", self.outcome.result())
            .field("code", self.outcome.code())
            .field("error_message", self.outcome.error())
            .to_js()
    }
}

/// The `refund_wallet_payment` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundWalletResponse<'a> {
    pub request_id: Option<&'a str>,
    pub transaction_id: Option<&'a str>,
    pub pos_local_time: Option<&'a str>,
    pub merchant: WalletMerchant<'a>,
    pub original_transaction_id: &'a str,
    pub original_reference: Option<&'a str>,
    pub outcome: Outcome,
}

impl RefundWalletResponse<'_> {
    pub fn to_js(&self) -> String {
        start(self.request_id)
            .field("result", self.outcome.result())
            .field("error_message", self.outcome.error())
            .field("code", self.outcome.code())
            .field("transaction_id", self.transaction_id)
            .field("pos_local_time", self.pos_local_time)
            .field("merchant_id", self.merchant.merchant_id)
            .field("terminal_id", self.merchant.terminal_id)
            .field("method", self.merchant.method)
            .field("original_transaction_id", self.original_transaction_id)
            .field("original_reference", self.original_reference)
            .to_js()
    }
}

/// Whether a body is in the form every body we emit must have: `JS(parse(body)) == body`.
pub fn is_canonical(body: &str) -> bool {
    crate::json::parse(body.as_bytes()).is_ok_and(|n| js(&n.value) == body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_written_again_for_another_request() {
        let bare = br#"{"transaction_id":"wtx-1","outcome":{"a":1}}"#;
        let enveloped = for_request(bare, Some("req-\"2")).unwrap();
        assert_eq!(
            enveloped,
            r#"{"requestId":"req-\"2","transaction_id":"wtx-1","outcome":{"a":1}}"#
        );
        assert_eq!(
            for_request(enveloped.as_bytes(), None).unwrap().as_bytes(),
            bare
        );
        let other = for_request(enveloped.as_bytes(), Some("req-3")).unwrap();
        assert!(
            other.starts_with(r#"{"requestId":"req-3","transaction_id""#),
            "{other}"
        );
        assert_eq!(for_request(b"[1]", None), None);
        assert_eq!(for_request(b"not json", None), None);
    }
}
