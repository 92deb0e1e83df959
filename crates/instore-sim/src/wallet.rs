//! The digital wallet (spec section 4): a single-use barcode the issuer gives a
//! cardholder's app, which the POS scans to pay. The barcode is issued through the admin
//! API; the six wallet actions are sent as InStore sends them. Their words, and the demo.

use crate::sim::{Log, Money, Outcome, Sim};
use crate::story::{Demo, Teller, cents, masked};
use serde_json::{Value, json};

/// A payment by barcode.
#[derive(Debug, Clone)]
pub struct Payment {
    /// The amount charged, `tip` included.
    pub total: Money,
    pub tip: Money,
    pub note: Option<String>,
}

/// What `log_cancel_wallet` tells of a payment the POS cancelled.
#[derive(Debug, Clone, Default)]
pub struct CancelLog {
    pub barcode: Option<String>,
    pub transaction_id: Option<String>,
    pub total: Option<Money>,
    pub reference: Option<String>,
    pub error_message: Option<String>,
}

/// The POS's local time, as InStore sends it (`2026-12-03 19:26:44`; UTC here).
pub fn pos_local_time() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

impl Sim {
    /// The issuer's `POST /v1/wallet/barcodes` for `user`'s account in `currency`.
    pub async fn barcode(
        &self,
        user: &str,
        currency: &str,
        card_id: Option<&str>,
        expires_in_secs: Option<u64>,
    ) -> anyhow::Result<Log> {
        let mut body = json!({"user_id": user, "currency": currency});
        if let Some(c) = card_id {
            body["card_id"] = c.into();
        }
        if let Some(s) = expires_in_secs {
            body["expires_in_secs"] = s.into();
        }
        self.admin_call("POST", "/v1/wallet/barcodes", Some(&body), None)
            .await
    }

    /// `initialize_wallet` for this simulator's location.
    pub async fn wallet_initialize(&self) -> anyhow::Result<Outcome> {
        let location = self.target.location_id.clone();
        self.enveloped("initialize_wallet", "initialize_wallet", |b| {
            b.field("location_id", location)
        })
        .await
    }

    /// `pay_wallet`: `payment.total` (tip included) from the barcode's account.
    pub async fn wallet_pay(&self, barcode: &str, payment: &Payment) -> anyhow::Result<Outcome> {
        let (total, tip) = (payment.total.cents()?, payment.tip.cents()?);
        self.enveloped("pay_wallet", "pay_wallet", |b| {
            b.field("barcode", barcode)
                .field("currency", payment.total.currency.code())
                .field("total", total)
                .field("pos_local_time", pos_local_time())
                .field("tip", tip)
                .field_opt("note", payment.note.as_deref())
        })
        .await
    }

    /// `available_wallet_refund`: what of a payment is still refundable.
    pub async fn wallet_refundable(&self, transaction_id: &str) -> anyhow::Result<Outcome> {
        self.enveloped("available_wallet_refund", "available_wallet_refund", |b| {
            b.field("transaction_id", transaction_id)
                .field("pos_local_time", pos_local_time())
        })
        .await
    }

    /// `refund_wallet_payment`: everything of a payment not yet refunded or reversed.
    pub async fn wallet_refund(
        &self,
        transaction_id: &str,
        note: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        self.enveloped("refund_wallet_payment", "refund_wallet_payment", |b| {
            b.field("transaction_id", transaction_id)
                .field("pos_local_time", pos_local_time())
                .field_opt("note", note)
        })
        .await
    }

    /// `cancel_wallet_payment`, naming the payment by transaction id or barcode (without
    /// either, nothing is reversed).
    pub async fn wallet_cancel(
        &self,
        transaction_id: Option<&str>,
        barcode: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let tenant = self.target.tenant_id.clone();
        self.enveloped("cancel_wallet_payment", "cancel_wallet_payment", |b| {
            b.field("tenant_id", tenant)
                .field_opt("transaction_id", transaction_id)
                .field_opt("barcode", barcode)
        })
        .await
    }

    /// `log_cancel_wallet`: the POS's record of a cancelled payment; one that still stands
    /// and matches is reversed.
    pub async fn wallet_log_cancel(&self, log: &CancelLog) -> anyhow::Result<Outcome> {
        let total = log.total.map(Money::cents).transpose()?;
        self.enveloped("log_cancel_wallet", "log_cancel_wallet", |b| {
            b.field_opt("barcode", log.barcode.as_deref())
                .field_opt("total", total.map(|t| t.to_string()))
                .field("tip", 0_i64)
                .field_opt("currency", log.total.as_ref().map(|t| t.currency.code()))
                .field_opt("reference", log.reference.as_deref())
                .field("response_code", "")
                .field_opt("transaction_id", log.transaction_id.as_deref())
                .field("pos_local_time", pos_local_time())
                .field_opt("error_message", log.error_message.as_deref())
        })
        .await
    }

    /// The issuer's view of `user`'s account in `currency`: its available balance.
    pub async fn available(&self, user: &str, currency: &str) -> anyhow::Result<Log> {
        self.admin_call(
            "GET",
            &format!("/v1/accounts/{user}/{currency}"),
            None,
            None,
        )
        .await
    }
}

/// An approved wallet answer in words.
pub fn words(action: &str, r: &Value) -> String {
    let tx = r["transaction_id"].as_str().unwrap_or("?");
    match action {
        "initialize_wallet" => "approved: the wallet is ready".into(),
        "pay_wallet" => format!(
            "approved: {} paid (tip {}, subtotal {}), transaction {tx}, {} at merchant {} terminal {}",
            cents(&r["total"]),
            cents(&r["tip"]),
            cents(&r["subtotal"]),
            r["method"].as_str().unwrap_or("?"),
            r["merchant_id"]
                .as_str()
                .filter(|m| !m.is_empty())
                .unwrap_or("-"),
            r["terminal_id"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("-"),
        ),
        "available_wallet_refund" => format!("{} refundable", cents(&r["total"])),
        "refund_wallet_payment" => format!(
            "approved: refunded as transaction {tx} (of {})",
            r["original_transaction_id"].as_str().unwrap_or("?")
        ),
        _ if r["reversed"] == true => "approved: the payment is reversed".into(),
        _ => "approved: nothing to reverse".into(),
    }
}

/// An issued barcode in words: `shown` tells it in full (the one time it is told).
pub fn barcode_words(l: &Log, shown: bool) -> String {
    if l.status != 201 {
        return crate::poa::admin_refusal(l);
    }
    let barcode = l.body["barcode"].as_str().unwrap_or("?");
    format!(
        "barcode {}, single use, expires at {}",
        if shown {
            barcode.to_owned()
        } else {
            masked(barcode)
        },
        l.body["expires_at"].as_str().unwrap_or("?")
    )
}

/// A balance the admin API told, in words.
pub fn available_words(l: &Log) -> String {
    if l.status != 200 {
        return crate::poa::admin_refusal(l);
    }
    format!(
        "{} {} available",
        l.body["available"].as_str().unwrap_or("?"),
        l.body["currency"].as_str().unwrap_or("")
    )
}

/// A wallet's day: the issuer opens `user`'s account with `deposit` and issues a barcode;
/// the POS initializes, pays `pay` (tip `tip` included), asks what is refundable, refunds
/// it, then pays 10.00 with a second barcode, loses the answer and logs the cancel (the
/// payment is reversed); the account ends where it began; then the callbacks received.
pub async fn demo(
    sim: &Sim,
    deposit: Money,
    pay: Money,
    tip: Money,
    print: bool,
) -> anyhow::Result<Demo> {
    let mut t = Teller::new(sim, print);
    let user = format!("wallet-{}", sim.run_id());
    let currency = deposit.currency.code();
    t.demo.number = Some(user.clone());
    let path = format!("/v1/accounts/{user}/{currency}");
    let opened = sim.admin_call("PUT", &path, None, None).await?;
    let funded = sim
        .admin_call(
            "POST",
            &format!("{path}/deposits"),
            Some(&json!({"amount": deposit.decimal(), "reference": "wallet demo"})),
            Some(&format!("deposit-{user}")),
        )
        .await?;
    let ok = opened.status < 300 && funded.status < 300;
    let said = if ok {
        format!("{deposit} deposited (admin API)")
    } else {
        crate::poa::admin_refusal(if funded.status < 300 {
            &opened
        } else {
            &funded
        })
    };
    t.fact(&format!("Open account {user} in {currency}"), said, ok);
    let issued = sim.barcode(&user, currency, None, None).await?;
    let first = issued.body["barcode"].as_str().map(str::to_owned);
    t.fact(
        "Issue a barcode (admin API)",
        barcode_words(&issued, false),
        first.is_some(),
    );
    let o = sim.wallet_initialize().await?;
    t.step("Initialize the wallet", o, true);
    let Some(first) = first else {
        return Ok(t.finish(sim));
    };
    let payment = Payment {
        total: pay,
        tip,
        note: Some("wallet demo".into()),
    };
    let o = sim.wallet_pay(&first, &payment).await?;
    let paid = o.result()["transaction_id"].as_str().map(str::to_owned);
    t.step(&format!("Pay {pay} (tip {tip} included)"), o, true);
    if let Some(tx) = &paid {
        let o = sim.wallet_refundable(tx).await?;
        t.step("Ask what is refundable", o, true);
        let o = sim.wallet_refund(tx, Some("returned")).await?;
        t.step("Refund the payment", o, true);
    }
    let second = sim.barcode(&user, currency, None, None).await?;
    let lost = Money {
        minor: Money::parse("10", currency)?.minor,
        currency: deposit.currency,
    };
    if let Some(b) = second.body["barcode"].as_str() {
        let payment = Payment {
            total: lost,
            tip: Money {
                minor: 0,
                currency: deposit.currency,
            },
            note: None,
        };
        let o = sim.wallet_pay(b, &payment).await?;
        t.step(
            &format!("Pay {lost} with a second barcode ({})", masked(b)),
            o,
            true,
        );
        let log = CancelLog {
            barcode: Some(b.to_owned()),
            total: Some(lost),
            reference: Some(format!("ref-{}", sim.run_id())),
            error_message: Some("timeout".into()),
            ..CancelLog::default()
        };
        let o = sim.wallet_log_cancel(&log).await?;
        t.step("The POS timed out: log the cancel", o, true);
    } else {
        t.fact(
            "Issue a second barcode",
            barcode_words(&second, false),
            false,
        );
    }
    let balance = sim.available(&user, currency).await?;
    let back = balance.body["available"].as_str() == Some(deposit.decimal().as_str());
    t.fact("The account", available_words(&balance), back);
    Ok(t.finish(sim))
}
