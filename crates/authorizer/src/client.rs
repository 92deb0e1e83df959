//! A client of a running authorizer: the processor simulator (requests signed exactly
//! as the processor signs them, through the protocol crate) and the admin API.

use crate::config::Settings;
use crate::credentials;
use anyhow::bail;
use processor_client::Method;
use protocol::wire::{
    AmountDetail, Amounts, CardRef, EntryMode, Merchant, MoneyField, Origin, PointType,
    ProductType, Provider, Source, TransactionInfo, TransactionRequest, TransactionType, UserRef,
};
use protocol::{ApiSecret, Notification, WireAmount};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Talks to one authorizer as the processor and as the issuer's back office, through the
/// shared signed client.
pub struct Client {
    inner: processor_client::Client,
    pub base: String,
}

/// A processor call and what came back.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Whether the answer's X-Signature verifies over its exact bytes with our key.
    pub signature_ok: bool,
    pub elapsed: Duration,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into()))
    }
}

impl Client {
    pub fn new(base: String, api_key: String, secret: ApiSecret, admin_token: String) -> Client {
        let http = awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(processor_client::tls_from_env()))
            .timeout(Duration::from_secs(30))
            .finish();
        let inner = processor_client::Client::new(http, &base, &api_key, secret, &admin_token)
            .with_body_limit(8 << 20);
        Client {
            base: inner.base().to_owned(),
            inner,
        }
    }

    /// Uses the same configuration (and generated credentials) as `serve`.
    pub fn from_settings(settings: &Settings, url: Option<&str>) -> anyhow::Result<Client> {
        let creds = credentials::resolve(settings, false)?;
        let base = match url {
            Some(u) => u.to_owned(),
            None => format!("http://{}", settings.server.listen),
        };
        Ok(Client::new(
            base,
            creds.api_key,
            creds.api_secret,
            creds.admin_token.expose().to_owned(),
        ))
    }

    fn failed(&self, f: processor_client::Failure) -> anyhow::Error {
        anyhow::anyhow!("cannot reach the authorizer at {}: {f}", self.base)
    }

    /// Sends a body to a processor route, signed now; checks the answer's signature.
    pub async fn processor(
        &self,
        path: &str,
        body: &[u8],
        idempotency_key: &str,
    ) -> anyhow::Result<Reply> {
        let started = Instant::now();
        let answer = self
            .inner
            .processor(path, idempotency_key, body.to_vec().into())
            .await
            .map_err(|f| self.failed(f))?;
        Ok(Reply {
            status: answer.status,
            body: answer.body.to_vec(),
            signature_ok: answer.signature_ok,
            elapsed: started.elapsed(),
        })
    }

    /// Calls the admin API; returns the status and the JSON body.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let method = match method {
            "GET" => Method::GET,
            "PUT" => Method::PUT,
            "POST" => Method::POST,
            m => bail!("unsupported method {m}"),
        };
        let answer = self
            .inner
            .admin(method, path, body.as_ref(), idempotency_key)
            .await
            .map_err(|f| self.failed(f))?;
        Ok((answer.status, answer.json()))
    }

    /// One account as the admin API shows it: status and JSON.
    pub async fn account(&self, user: &str, currency: &str) -> anyhow::Result<(u16, Value)> {
        self.admin("GET", &account_path(user, currency), None, None)
            .await
    }

    /// The available balance, or `None` when the account does not exist.
    pub async fn available(&self, user: &str, currency: &str) -> anyhow::Result<Option<String>> {
        let (status, v) = self.account(user, currency).await?;
        Ok((status == 200).then(|| v["available"].as_str().unwrap_or_default().to_owned()))
    }
}

/// What the simulator can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimKind {
    Purchase,
    Withdrawal,
    Cashback,
    Balance,
    Refund,
    AdjustDebit,
    AdjustCredit,
    AdviceApproved,
    AdviceRejected,
}

/// One simulated processor call.
#[derive(Debug, Clone, clap::Args)]
pub struct Simulation {
    #[arg(value_enum)]
    pub kind: SimKind,
    #[arg(long, default_value = "demo-user")]
    pub user: String,
    #[arg(long)]
    pub card: Option<String>,
    /// Amount in the cardholder's currency, as a decimal (e.g. 125.50).
    #[arg(long, default_value = "0")]
    pub amount: String,
    #[arg(long, default_value = "ARS")]
    pub currency: String,
    /// For cashback: the part withdrawn as cash (added to --amount).
    #[arg(long)]
    pub extracash: Option<String>,
    /// The authorization an adjustment corrects, or an advice is about.
    #[arg(long)]
    pub original: Option<String>,
    /// Transaction id (default: generated).
    #[arg(long)]
    pub id: Option<String>,
    /// Merchant category code.
    #[arg(long, default_value = "5045")]
    pub mcc: String,
    /// Override transaction.type (e.g. REVERSAL_PURCHASE).
    #[arg(long = "type")]
    pub tx_type: Option<String>,
}

fn money(text: &str, currency: &str) -> anyhow::Result<MoneyField> {
    let total = WireAmount::parse(text).map_err(|e| anyhow::anyhow!("amount '{text}': {e}"))?;
    Ok(MoneyField {
        total,
        currency: currency.to_owned(),
    })
}

/// `prefix-` and 16 random hex digits.
pub fn generated_id(prefix: &str) -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    format!(
        "{prefix}-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// The route, body, transaction id and idempotency key of a simulated call.
pub struct Built {
    pub path: &'static str,
    pub body: Vec<u8>,
    pub transaction_id: String,
    pub idempotency_key: String,
    pub summary: String,
}

impl Simulation {
    pub fn build(&self) -> anyhow::Result<Built> {
        use SimKind::*;
        let (path, default_type) = match self.kind {
            Purchase => ("/transactions/authorizations/debit", "PURCHASE"),
            Withdrawal => ("/transactions/authorizations/debit", "WITHDRAWAL"),
            Cashback => ("/transactions/authorizations/debit", "CASHBACK"),
            Balance => ("/transactions/authorizations", "BALANCE_INQUIRY"),
            Refund => ("/transactions/adjustments/credit", "REFUND"),
            AdjustDebit => ("/transactions/adjustments/debit", "PURCHASE"),
            AdjustCredit => (
                "/transactions/adjustments/credit",
                if self.original.is_some() {
                    "REVERSAL_PURCHASE"
                } else {
                    "PAYMENT"
                },
            ),
            AdviceApproved | AdviceRejected => ("/transactions/v1/notifications", "PURCHASE"),
        };
        let is_advice = matches!(self.kind, AdviceApproved | AdviceRejected);
        if is_advice && self.original.is_none() {
            bail!("an advice is about an earlier transaction: pass --original <transaction id>");
        }
        let id = match (&self.id, is_advice) {
            (Some(id), _) => id.clone(),
            (None, true) => self.original.clone().unwrap_or_default(),
            (None, false) => generated_id("ctx-sim"),
        };
        let base = money(&self.amount, &self.currency)?;
        let (total, details) = match (self.kind, &self.extracash) {
            (Cashback, Some(extra)) => {
                let b = base.total.value().unwrap_or_default();
                let e = WireAmount::parse(extra)
                    .map_err(|e| anyhow::anyhow!("extracash: {e}"))?
                    .value()
                    .unwrap_or_default();
                let line = |kind: &str, a: WireAmount| AmountDetail {
                    kind: Some(kind.into()),
                    currency: Some(self.currency.clone()),
                    amount: Some(a),
                    name: Some(kind.into()),
                };
                (
                    MoneyField {
                        total: WireAmount::from_decimal(b + e),
                        currency: self.currency.clone(),
                    },
                    vec![
                        line("BASE", base.total.clone()),
                        line("EXTRACASH", WireAmount::from_decimal(e)),
                    ],
                )
            }
            _ => (
                base.clone(),
                vec![AmountDetail {
                    kind: Some("BASE".into()),
                    currency: Some(self.currency.clone()),
                    amount: Some(base.total.clone()),
                    name: Some("BASE".into()),
                }],
            ),
        };
        let kind = TransactionType::from(
            self.tx_type
                .clone()
                .unwrap_or_else(|| default_type.to_owned()),
        );
        let transaction = TransactionInfo {
            id: id.clone(),
            kind,
            point_type: Some(if matches!(self.kind, Withdrawal) {
                PointType::Atm
            } else {
                PointType::Pos
            }),
            entry_mode: Some(EntryMode::Contactless),
            origin: Some(Origin::Domestic),
            source: Some(Source::Online),
            country_code: Some("ARG".into()),
            local_date_time: Some("2024-01-01T10:00:00".into()),
            original_transaction_id: if is_advice {
                None
            } else {
                self.original.clone()
            },
        };
        let card = CardRef {
            id: self
                .card
                .clone()
                .unwrap_or_else(|| format!("crd-{}", self.user)),
            product_type: Some(ProductType::Prepaid),
            provider: Some(Provider::Mastercard),
            last_four: Some("6708".into()),
        };
        let merchant = Merchant {
            id: Some("111111111111111".into()),
            mcc: Some(self.mcc.clone()),
            name: Some("Simulated merchant".into()),
            terminal_id: Some("T1".into()),
            country: Some("ARG".into()),
            city: Some("CABA".into()),
            address: None,
        };
        let amount = Amounts {
            local: total.clone(),
            transaction: Some(total.clone()),
            settlement: None,
            details: Some(details),
        };
        let user = UserRef {
            id: self.user.clone(),
        };
        let idempotency_key = generated_id("idem");
        let request = TransactionRequest {
            transaction,
            merchant: Some(merchant),
            card: Some(card),
            user: Some(user),
            amount,
        };
        let body = if is_advice {
            let approved = self.kind == AdviceApproved;
            let n =
                Notification::advice(request, approved, "CLIENT_TIMEOUT", idempotency_key.clone());
            serde_json::to_vec(&n)?
        } else {
            serde_json::to_vec(&request)?
        };
        let summary = match self.kind {
            Balance => format!("balance inquiry for {} in {}", self.user, self.currency),
            AdviceApproved | AdviceRejected => {
                format!("{:?} advice for {id}", self.kind)
                    .to_lowercase()
                    .replace("advice", "")
                    .trim()
                    .to_owned()
                    + " advice"
            }
            _ => format!(
                "{} {} {} for {}",
                default_type.to_lowercase().replace('_', " "),
                total.total.text(),
                self.currency,
                self.user
            ),
        };
        Ok(Built {
            path,
            body,
            transaction_id: id,
            idempotency_key,
            summary,
        })
    }
}

/// Runs one simulation; returns the JSON report and whether the signature verified.
pub async fn simulate(client: &Client, sim: &Simulation) -> anyhow::Result<(Value, String, bool)> {
    let built = sim.build()?;
    let reply = client
        .processor(built.path, &built.body, &built.idempotency_key)
        .await?;
    let balance = client
        .available(&sim.user, &sim.currency)
        .await
        .ok()
        .flatten();
    let answer = reply.json();
    let decision = match (
        answer.get("status"),
        answer.get("status_detail"),
        answer.get("effect"),
    ) {
        (Some(s), Some(d), _) if s != d => {
            format!("{} {}", s.as_str().unwrap_or(""), d.as_str().unwrap_or(""))
        }
        (_, Some(d), _) => d.as_str().unwrap_or("").to_owned(),
        (_, _, Some(e)) => format!("stored, {}", e.as_str().unwrap_or("").to_lowercase()),
        _ => answer
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned(),
    };
    let message = answer.get("message").and_then(Value::as_str).unwrap_or("");
    let mut human = format!(
        "{} [{}]\n  -> HTTP {} {}{} in {:.1} ms; response signature {}",
        built.summary,
        built.transaction_id,
        reply.status,
        decision,
        if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        },
        reply.elapsed.as_secs_f64() * 1000.0,
        if reply.signature_ok {
            "verified"
        } else {
            "DID NOT VERIFY"
        },
    );
    if let Some(b) = answer.get("balance") {
        human.push_str(&format!(
            "\n  balance reported: {} {}",
            b["total"].as_str().unwrap_or(""),
            b["currency"].as_str().unwrap_or("")
        ));
    }
    if let Some(b) = &balance {
        human.push_str(&format!("\n  available after: {b} {}", sim.currency));
    }
    let report = json!({
        "transaction_id": built.transaction_id,
        "idempotency_key": built.idempotency_key,
        "route": built.path,
        "http_status": reply.status,
        "response": answer,
        "signature_verified": reply.signature_ok,
        "elapsed_ms": reply.elapsed.as_secs_f64() * 1000.0,
        "available_after": balance,
    });
    Ok((report, human, reply.signature_ok))
}

/// `id` as one URL path segment (percent-encoded where it must be): the processor's ids may
/// hold `/`, `?`, `#` or `%`.
pub(crate) fn url_path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The admin API's path of the account of `user` in `currency`.
pub(crate) fn account_path(user: &str, currency: &str) -> String {
    format!(
        "/v1/accounts/{}/{}",
        url_path_segment(user),
        url_path_segment(currency)
    )
}
