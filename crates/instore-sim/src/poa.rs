//! Pay on account (spec section 3): the company accounts a store charges sales to. The
//! requests InStore sends (`payonaccount/process` with `Create`, `Credit`, `Inquiry` and
//! `Update`; the `payonaccountlog` record and its GET), the issuer's credit-limit change
//! through the admin API, their words, and the demo.

use crate::sim::{Log, Money, Outcome, Sim};
use crate::story::{self, Demo, Teller, amount, masked};
use instore::json::Value as JsValue;
use serde_json::Value;

/// The outcome labels of the pay-on-account requests.
pub const CREATE: &str = "POA Create";
pub const CREDIT: &str = "POA Credit";
pub const INQUIRY: &str = "POA Inquiry";
pub const UPDATE: &str = "POA Update";
pub const LOG: &str = "POA Log";

/// What `Create` and `Update` send about the company.
#[derive(Debug, Clone, Default)]
pub struct Company {
    pub name: Option<String>,
    /// The users who may charge the account (empty: anyone at the tenant).
    pub users: Option<Vec<String>>,
}

/// A sale's record for `payonaccountlog`.
#[derive(Debug, Clone)]
pub struct Record {
    pub amount: Money,
    pub user: Option<String>,
    pub session_id: String,
    pub order_id: String,
    pub approved: bool,
}

fn strings(items: &[String]) -> JsValue {
    JsValue::from(
        items
            .iter()
            .map(|i| JsValue::from(i.as_str()))
            .collect::<Vec<_>>(),
    )
}

impl Sim {
    /// `payonaccount/process` with `action` on `account`; `fields` adds the rest.
    async fn poa(
        &self,
        label: &'static str,
        action: &str,
        account: &str,
        fields: impl FnOnce(instore::json::ObjectBuilder) -> instore::json::ObjectBuilder,
    ) -> anyhow::Result<Outcome> {
        self.enveloped(label, "payonaccount/process", |b| {
            fields(b.field("action", action).field("account_number", account))
        })
        .await
    }

    /// `Create`: opens `account` with a credit line of `credit_limit`.
    pub async fn poa_create(
        &self,
        account: &str,
        company: &Company,
        credit_limit: Money,
    ) -> anyhow::Result<Outcome> {
        self.poa(CREATE, "Create", account, |b| {
            b.field_opt("company_name", company.name.as_deref())
                .field_opt("authorized_user_ids", company.users.as_deref().map(strings))
                .field("credit_limit", credit_limit.wire_strings())
        })
        .await
    }

    /// `Credit`: charges `amount` to `account`, as `user` when given.
    pub async fn poa_credit(
        &self,
        account: &str,
        amount: Money,
        user: Option<&str>,
    ) -> anyhow::Result<Outcome> {
        let users = user.map(|u| vec![u.to_owned()]);
        self.poa(CREDIT, "Credit", account, |b| {
            b.field_opt("authorized_user_ids", users.as_deref().map(strings))
                .field("balance", amount.wire_strings())
        })
        .await
    }

    /// `Inquiry`: the company, its users, what it owes and its credit limit.
    pub async fn poa_inquiry(&self, account: &str) -> anyhow::Result<Outcome> {
        self.poa(INQUIRY, "Inquiry", account, |b| b).await
    }

    /// `Update`: replaces the company name and/or the users.
    pub async fn poa_update(&self, account: &str, company: &Company) -> anyhow::Result<Outcome> {
        self.poa(UPDATE, "Update", account, |b| {
            b.field_opt("company_name", company.name.as_deref())
                .field_opt("authorized_user_ids", company.users.as_deref().map(strings))
        })
        .await
    }

    /// `payonaccountlog`: the POS's record of a `Credit` sale (no money moves).
    pub async fn poa_record(&self, account: &str, r: &Record) -> anyhow::Result<Outcome> {
        self.enveloped(LOG, "payonaccountlog", |b| {
            b.field("action", "Credit")
                .field("account_number", account)
                .field_opt("authorized_user_id", r.user.as_deref())
                .field("amount", r.amount.wire_strings())
                .field("session_id", r.session_id.as_str())
                .field("order_id", r.order_id.as_str())
                .field("status", if r.approved { "approved" } else { "declined" })
        })
        .await
    }

    /// `GET payonaccountlog/{account}?..&account_number={account}`: the account's records,
    /// newest first. The account is in the signed query too: a signature over the other
    /// parameters alone would read any account's log, and is refused.
    pub async fn poa_logs(&self, account: &str) -> anyhow::Result<Log> {
        let more = format!("&account_number={}", crate::sim::query_value(account));
        self.signed_get(&format!("payonaccountlog/{account}"), &more)
            .await
    }

    /// The issuer's `PUT /v1/instore/poa/{tenant}/{account}`: a new credit limit, a block.
    pub async fn poa_settings(
        &self,
        account: &str,
        credit_limit: Option<Money>,
        blocked: Option<bool>,
    ) -> anyhow::Result<Log> {
        let mut body = serde_json::Map::new();
        if let Some(l) = credit_limit {
            body.insert("credit_limit".into(), l.decimal().into());
        }
        if let Some(b) = blocked {
            body.insert("blocked".into(), b.into());
        }
        self.admin_call(
            "PUT",
            &format!("/v1/instore/poa/{}/{account}", self.target.tenant_id),
            Some(&Value::Object(body)),
            None,
        )
        .await
    }

    /// The account's charges and their reversals, newest first, from the issuer's view (the
    /// ledger user behind the account, then its postings): the movement ids a reversal
    /// names. `None` in the answer's place when the admin API refused.
    pub async fn poa_charges(&self, account: &str) -> anyhow::Result<(Log, Option<Log>)> {
        let view = self.poa_settings(account, None, None).await?;
        let (Some(user), Some(currency)) = (
            view.body["user_id"].as_str(),
            view.body["currency"].as_str(),
        ) else {
            return Ok((view, None));
        };
        let path = format!("/v1/accounts/{user}/{currency}/postings?limit=100");
        let postings = self.admin_call("GET", &path, None, None).await?;
        Ok((view, Some(postings)))
    }

    /// The issuer's `POST /v1/instore/poa/{tenant}/{account}/reversals`: one charge (a
    /// `POA_CHARGE` movement of the account's ledger user) reversed, once.
    pub async fn poa_reverse(&self, account: &str, movement_id: i64) -> anyhow::Result<Log> {
        self.admin_call(
            "POST",
            &format!(
                "/v1/instore/poa/{}/{account}/reversals",
                self.target.tenant_id
            ),
            Some(&serde_json::json!({ "movement_id": movement_id })),
            None,
        )
        .await
    }
}

/// An approved `Create`, `Inquiry` or `Update` in words.
pub fn account_words(r: &Value) -> String {
    let users: Vec<&str> = r["authorized_user_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let limit = if r["credit_limit"].is_object() {
        format!(", credit limit {}", amount(&r["credit_limit"]))
    } else {
        String::new()
    };
    format!(
        "approved: account {} of {}, users {}, {} owed{limit}",
        masked(r["account_number"].as_str().unwrap_or("")),
        r["company_name"].as_str().unwrap_or("-"),
        if users.is_empty() {
            "anyone".to_owned()
        } else {
            users.join(", ")
        },
        amount(&r["balance"]),
    )
}

/// The issuer's view of an account, as the admin API answered (200 for a change, 201 for a
/// reversal).
pub fn settings_words(l: &Log) -> String {
    if !matches!(l.status, 200 | 201) {
        return admin_refusal(l);
    }
    let b = &l.body;
    let currency = b["currency"].as_str().unwrap_or("");
    let reversed = b["reversed_movement_id"]
        .as_i64()
        .map_or_else(String::new, |m| format!("movement {m} reversed; "));
    format!(
        "{reversed}account {} (ledger user {}): credit limit {} {currency}, owed {} {currency}, available {} {currency}{}",
        masked(b["account_number"].as_str().unwrap_or("")),
        b["user_id"].as_str().unwrap_or("?"),
        b["credit_limit"].as_str().unwrap_or("?"),
        b["owed"].as_str().unwrap_or("?"),
        b["available"].as_str().unwrap_or("?"),
        if b["blocked"] == true {
            ", blocked"
        } else {
            ""
        }
    )
}

/// The charges and reversals of an account's postings, one line each, under the
/// issuer's view of the account.
pub fn charges_words(view: &Log, postings: Option<&Log>) -> Vec<String> {
    let mut lines = vec![settings_words(view)];
    let Some(p) = postings else {
        return lines;
    };
    if p.status != 200 {
        lines.push(admin_refusal(p));
        return lines;
    }
    let currency = view.body["currency"].as_str().unwrap_or("");
    for e in p.body["postings"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  movement {:>6}  {:<12} {:>14}  owed after {:>14}",
            e["movement_id"].as_i64().unwrap_or(0),
            e["kind"].as_str().unwrap_or("?"),
            format!("{} {currency}", e["amount"].as_str().unwrap_or("?")),
            format!(
                "{} {currency}",
                e["balance_after"].as_str().map_or("?".to_owned(), |b| b
                    .strip_prefix('-')
                    .map_or_else(|| format!("-{b}"), str::to_owned))
            ),
        ));
    }
    lines
}

/// An admin API refusal in one line.
pub fn admin_refusal(l: &Log) -> String {
    format!(
        "refused by the admin API: HTTP {} {} ({})",
        l.status,
        l.body["error"]["code"].as_str().unwrap_or("?"),
        l.body["error"]["message"].as_str().unwrap_or("")
    )
}

/// The account's log records, newest first, one line each.
pub fn logs_words(l: &Log) -> Vec<String> {
    if l.status != 200 {
        return story::log(l);
    }
    let records = l.body["logs"].as_array().map_or(&[][..], Vec::as_slice);
    let mut lines = vec![format!(
        "account {}: {} record{} (newest first)",
        masked(l.body["account_number"].as_str().unwrap_or("")),
        records.len(),
        if records.len() == 1 { "" } else { "s" }
    )];
    for r in records {
        lines.push(format!(
            "  {}  {:<6} {:>14}  {:<8}  order {}  by {}",
            r["received_at"].as_str().unwrap_or("?"),
            r["action"].as_str().unwrap_or("?"),
            amount(&r["amount"]),
            r["status"].as_str().unwrap_or("?"),
            r["order_id"].as_str().unwrap_or("-"),
            r["authorized_user_id"].as_str().unwrap_or("-"),
        ));
    }
    lines
}

/// A company account's life: open it with a credit line of `limit` for one clerk, charge
/// `charge`, try to charge more than is left (declined), rename the company, ask what is
/// owed, record the sale in the log, read the log; then the callbacks received.
pub async fn demo(sim: &Sim, limit: Money, charge: Money, print: bool) -> anyhow::Result<Demo> {
    let mut t = Teller::new(sim, print);
    let account = format!("ACME-{}", sim.run_id());
    let clerk = "clerk-1".to_owned();
    t.demo.number = Some(account.clone());
    let company = Company {
        name: Some("Acme Supplies".into()),
        users: Some(vec![clerk.clone()]),
    };
    let o = sim.poa_create(&account, &company, limit).await?;
    t.step(
        &format!(
            "Open account {} with a {limit} credit line",
            masked(&account)
        ),
        o,
        true,
    );
    let o = sim.poa_credit(&account, charge, Some(&clerk)).await?;
    t.step(&format!("Charge {charge} as {clerk}"), o, true);
    let over = Money {
        minor: limit.minor - charge.minor + 1,
        currency: limit.currency,
    };
    let o = sim.poa_credit(&account, over, Some(&clerk)).await?;
    t.step(&format!("Charge {over}, more than is left"), o, false);
    let renamed = Company {
        name: Some("Acme Supplies Ltd".into()),
        users: None,
    };
    let o = sim.poa_update(&account, &renamed).await?;
    t.step("Rename the company", o, true);
    let o = sim.poa_inquiry(&account).await?;
    t.step("Ask what is owed", o, true);
    let record = Record {
        amount: charge,
        user: Some(clerk),
        session_id: format!("session-{}", sim.run_id()),
        order_id: format!("order-{}", sim.run_id()),
        approved: true,
    };
    let o = sim.poa_record(&account, &record).await?;
    t.step("Record the sale in the account's log", o, true);
    let l = sim.poa_logs(&account).await?;
    let mut lines = logs_words(&l);
    let n = t.next();
    if let Some(first) = lines.first_mut() {
        *first = format!("{n}. The log of {first}");
    }
    for line in lines {
        t.say(line);
    }
    let logged = l.status == 200;
    t.demo.log = Some(l);
    let mut d = t.finish(sim);
    d.ok &= logged;
    Ok(d)
}
