//! The processor bodies the simulator builds (point-integration §2.5, §2.7; processor-protocol
//! §5 and §7). Pure: no clock, no I/O; the caller passes the device-local time.

use crate::config::{DeviceConfig, Site, d_product, d_provider};
use serde::{Deserialize, Serialize};

/// A card presented on a device (the body of `POST /sim/devices/{id}/present`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Presentation {
    pub card_id: String,
    pub user_id: String,
    #[serde(default = "d_product")]
    pub product_type: String,
    #[serde(default = "d_provider")]
    pub provider: String,
    #[serde(default = "d_last_four")]
    pub last_four: String,
    #[serde(default = "d_entry")]
    pub entry_mode: String,
    #[serde(default)]
    pub pin: bool,
    /// Simulator fault hook: the authorizer's answer is held this long before the terminal
    /// sees it, as a slow authorizer or network would (the request itself goes out at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_delay_ms: Option<u64>,
}

fn d_last_four() -> String {
    "0000".into()
}
fn d_entry() -> String {
    "CHIP".into()
}

/// Entry modes a terminal reads a card with.
pub const ENTRY_MODES: [&str; 3] = ["CHIP", "CONTACTLESS", "MAG_STRIPE"];

/// `payment.type` of the intent from the card's product type.
pub fn payment_type(product_type: &str) -> &'static str {
    match product_type {
        "CREDIT" => "credit_card",
        "DEBIT" => "debit_card",
        _ => "prepaid_card",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TxInfo {
    pub id: String,
    pub country_code: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub point_type: String,
    pub entry_mode: String,
    pub origin: String,
    pub source: String,
    pub local_date_time: String,
    pub original_transaction_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MerchantObj {
    pub id: String,
    pub mcc: String,
    pub address: Option<String>,
    pub name: String,
    pub terminal_id: String,
    pub country: String,
    pub city: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CardObj {
    pub id: String,
    pub product_type: String,
    pub provider: String,
    pub last_four: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserObj {
    pub id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Installments {
    pub quantity: String,
    pub current_installment: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Money {
    pub total: String,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    #[serde(rename = "type")]
    pub kind: String,
    pub currency: String,
    pub amount: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AmountObj {
    pub local: Money,
    pub transaction: Money,
    pub settlement: Money,
    pub details: Vec<Detail>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExtraData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_presence: Option<String>,
    pub card_presence: String,
}

/// An authorization or adjustment body, members in the order of processor-protocol §5.
#[derive(Debug, Clone, Serialize)]
pub struct TxBody {
    pub transaction: TxInfo,
    pub merchant: MerchantObj,
    pub card: CardObj,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installments: Option<Installments>,
    pub user: UserObj,
    pub amount: AmountObj,
    pub extra_data: ExtraData,
}

impl TxBody {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a body of strings serializes")
    }
}

/// `amount` (two decimals included) as a two-decimal string: 1500 gives `"15.00"`.
pub fn decimal(minor: i64) -> String {
    protocol::minor::format_minor(minor, 2)
}

/// `transaction.id` of the authorization of a payment intent.
pub fn auth_id(intent_id: &str) -> String {
    format!("ctx-pt-{intent_id}")
}

/// What a sale is made of.
pub struct Sale<'a> {
    pub transaction_id: String,
    pub device: &'a DeviceConfig,
    pub card: &'a Presentation,
    pub amount_minor: i64,
    pub currency: String,
    /// `YYYY-MM-DDTHH:MM:SS`, device-local.
    pub local_date_time: String,
    /// MLB installments > 1.
    pub installments: Option<u32>,
}

/// The authorization body of §2.5.
pub fn authorization(sale: &Sale<'_>) -> TxBody {
    let site: Site = sale.device.site;
    let total = decimal(sale.amount_minor);
    let money = || Money {
        total: total.clone(),
        currency: sale.currency.clone(),
    };
    TxBody {
        transaction: TxInfo {
            id: sale.transaction_id.clone(),
            country_code: site.country().into(),
            kind: "PURCHASE".into(),
            point_type: "POS".into(),
            entry_mode: sale.card.entry_mode.clone(),
            origin: "DOMESTIC".into(),
            source: "ONLINE".into(),
            local_date_time: sale.local_date_time.clone(),
            original_transaction_id: None,
        },
        merchant: MerchantObj {
            id: sale.device.merchant.id.clone(),
            mcc: sale.device.merchant.mcc.clone(),
            address: None,
            name: sale.device.merchant.name.clone(),
            terminal_id: sale.device.terminal_id().into(),
            country: site.country().into(),
            city: sale.device.merchant.city.clone(),
        },
        card: CardObj {
            id: sale.card.card_id.clone(),
            product_type: sale.card.product_type.clone(),
            provider: sale.card.provider.clone(),
            last_four: sale.card.last_four.clone(),
        },
        installments: sale.installments.filter(|n| *n > 1).map(|n| Installments {
            quantity: n.to_string(),
            current_installment: "1".into(),
        }),
        user: UserObj {
            id: sale.card.user_id.clone(),
        },
        amount: AmountObj {
            local: money(),
            transaction: money(),
            settlement: money(),
            details: vec![Detail {
                kind: "BASE".into(),
                currency: sale.currency.clone(),
                amount: total.clone(),
                name: "BASE".into(),
            }],
        },
        extra_data: ExtraData {
            pin_presence: sale.card.pin.then(|| "ONLINE".into()),
            card_presence: "PRESENT".into(),
        },
    }
}

/// A credit adjustment (`REVERSAL_PURCHASE` or `REFUND`) of the full amount of `original`,
/// linked to it.
pub fn credit_adjustment(
    original: &TxBody,
    transaction_id: &str,
    kind: &str,
    local_date_time: &str,
) -> TxBody {
    let mut b = original.clone();
    b.transaction.original_transaction_id = Some(original.transaction.id.clone());
    b.transaction.id = transaction_id.into();
    b.transaction.kind = kind.into();
    b.transaction.local_date_time = local_date_time.into();
    b.installments = None;
    b
}

/// `body` with every amount (local, transaction, settlement, the BASE line) set to `minor`.
pub fn with_amount(mut body: TxBody, minor: i64) -> TxBody {
    let total = decimal(minor);
    body.amount.local.total = total.clone();
    body.amount.transaction.total = total.clone();
    body.amount.settlement.total = total.clone();
    for d in &mut body.amount.details {
        d.amount = total.clone();
    }
    body
}

#[derive(Serialize)]
struct AdviceDetail<'a> {
    #[serde(flatten)]
    tx: &'a TxBody,
    status: &'a str,
    status_detail: &'a str,
}

#[derive(Serialize)]
struct Advice<'a> {
    event_id: &'a str,
    event_detail: AdviceDetail<'a>,
    idempotency_key: &'a str,
}

/// An `authorization-advice` notification (rejected by the processor, or echoing our own
/// rejection) for the authorization `tx`.
pub fn advice(tx: &TxBody, status_detail: &str, idempotency_key: &str) -> Vec<u8> {
    serde_json::to_vec(&Advice {
        event_id: "authorization-advice",
        event_detail: AdviceDetail {
            tx,
            status: "REJECTED",
            status_detail,
        },
        idempotency_key,
    })
    .expect("an advice serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A sale of `amount_minor` in `currency` at the vectors' local time, in one payment.
    fn sale<'a>(
        id: &str,
        device: &'a DeviceConfig,
        card: &'a Presentation,
        amount_minor: i64,
        currency: &str,
    ) -> Sale<'a> {
        Sale {
            transaction_id: id.into(),
            device,
            card,
            amount_minor,
            currency: currency.into(),
            local_date_time: "2024-01-01T10:00:00".into(),
            installments: None,
        }
    }

    fn vector_card() -> Presentation {
        Presentation {
            card_id: "crd-1629483284114MGA9BF".into(),
            user_id: "usr-1629293693904DM2U4T".into(),
            product_type: "PREPAID".into(),
            provider: "MASTERCARD".into(),
            last_four: "6708".into(),
            entry_mode: "CHIP".into(),
            pin: true,
            answer_delay_ms: None,
        }
    }

    /// point-integration §4: the body, its length and hash, and its signature.
    #[test]
    fn section_4_vector() {
        let device = crate::config::demo_device();
        let card = vector_card();
        let id = auth_id("7d8c70b6-2ac8-4c57-a441-c319088ca3ca");
        let body = authorization(&sale(&id, &device, &card, 1500, "ARS")).to_bytes();
        let expected = r#"{"transaction":{"id":"ctx-pt-7d8c70b6-2ac8-4c57-a441-c319088ca3ca","country_code":"ARG","type":"PURCHASE","point_type":"POS","entry_mode":"CHIP","origin":"DOMESTIC","source":"ONLINE","local_date_time":"2024-01-01T10:00:00","original_transaction_id":null},"merchant":{"id":"111111111111111","mcc":"5411","address":null,"name":"Almacen Demo","terminal_id":"ING-ARG-14886780","country":"ARG","city":"CABA"},"card":{"id":"crd-1629483284114MGA9BF","product_type":"PREPAID","provider":"MASTERCARD","last_four":"6708"},"user":{"id":"usr-1629293693904DM2U4T"},"amount":{"local":{"total":"15.00","currency":"ARS"},"transaction":{"total":"15.00","currency":"ARS"},"settlement":{"total":"15.00","currency":"ARS"},"details":[{"type":"BASE","currency":"ARS","amount":"15.00","name":"BASE"}]},"extra_data":{"pin_presence":"ONLINE","card_presence":"PRESENT"}}"#;
        assert_eq!(String::from_utf8(body.clone()).unwrap(), expected);
        assert_eq!(body.len(), 844);
        let hash: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hash,
            "01e9f371c09f2c63315d9516f8e596c4de60857fbf358e594d7f7f4545f953f5"
        );
        let secret =
            protocol::ApiSecret::from_base64("uC8fVXzXMyaw1PseV452i6ozQwIIa4olcSpjuvn5E4E=")
                .unwrap();
        assert_eq!(
            crate::signed::signature(
                &secret,
                "1700000300",
                "/transactions/authorizations/debit",
                &body
            ),
            "hmac-sha256 xs/ON5wOGR5dNZwXeJqvv3BtKJlziwIpOi5OPoFwRZo="
        );
        // The protocol crate reads it back as what it is.
        let parsed = protocol::TransactionRequest::from_slice(&body).unwrap();
        assert_eq!(
            parsed.transaction.id,
            auth_id("7d8c70b6-2ac8-4c57-a441-c319088ca3ca")
        );
    }

    #[test]
    fn installments_pin_and_payment_types() {
        let mut device = crate::config::demo_device();
        device.site = Site::Mlb;
        let mut card = vector_card();
        card.pin = false;
        card.entry_mode = "CONTACTLESS".into();
        let b = authorization(&Sale {
            installments: Some(3),
            ..sale("ctx-pt-x", &device, &card, 123_456, "BRL")
        });
        let v: serde_json::Value = serde_json::from_slice(&b.to_bytes()).unwrap();
        assert_eq!(
            v["installments"],
            serde_json::json!({"quantity":"3","current_installment":"1"})
        );
        assert_eq!(
            v["extra_data"],
            serde_json::json!({"card_presence":"PRESENT"})
        );
        assert_eq!(v["amount"]["local"]["total"], "1234.56");
        assert_eq!(v["transaction"]["country_code"], "BRA");
        assert_eq!(v["transaction"]["entry_mode"], "CONTACTLESS");
        let single = authorization(&Sale {
            installments: Some(1),
            ..sale("ctx-pt-x", &device, &card, 100, "BRL")
        });
        assert!(single.installments.is_none());
        assert_eq!(payment_type("CREDIT"), "credit_card");
        assert_eq!(payment_type("DEBIT"), "debit_card");
        assert_eq!(payment_type("PREPAID"), "prepaid_card");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(400_000_000), "4000000.00");
    }

    #[test]
    fn adjustments_and_advices_link_to_the_authorization() {
        let device = crate::config::demo_device();
        let card = vector_card();
        let auth = authorization(&sale(&auth_id("i1"), &device, &card, 1100, "ARS"));
        let rev = credit_adjustment(
            &auth,
            "ctx-pt-i1-rev",
            "REVERSAL_PURCHASE",
            "2024-01-01T10:00:01",
        );
        let parsed = protocol::TransactionRequest::from_slice(&rev.to_bytes()).unwrap();
        assert_eq!(
            parsed.transaction.original_transaction_id.as_deref(),
            Some("ctx-pt-i1")
        );
        assert_eq!(parsed.transaction.id, "ctx-pt-i1-rev");
        assert_eq!(parsed.transaction.kind.as_str(), "REVERSAL_PURCHASE");
        let adv = advice(&auth, "CLIENT_TIMEOUT", "pt-adv-i1");
        let n = protocol::Notification::from_slice(&adv).unwrap();
        assert_eq!(n.event_id, "authorization-advice");
        assert_eq!(n.idempotency_key.as_deref(), Some("pt-adv-i1"));
        assert_eq!(n.event_detail.status.as_deref(), Some("REJECTED"));
        assert_eq!(
            n.event_detail.status_detail.as_deref(),
            Some("CLIENT_TIMEOUT")
        );
        assert_eq!(n.event_detail.transaction.unwrap().id, "ctx-pt-i1");
    }
}
