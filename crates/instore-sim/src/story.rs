//! What happened, in a person's words: one line per answer, and the demo's walk through a
//! gift card's life.

use crate::sim::{Log, Money, NewCard, Outcome, Sim};
use serde_json::Value;

/// `{"amount":1220,"precision":2,"currency":"USD"}` as `12.20 USD`.
pub fn amount(v: &Value) -> String {
    let precision = v["precision"]
        .as_u64()
        .and_then(|p| u8::try_from(p).ok())
        .unwrap_or(0);
    match v["amount"].as_i64() {
        Some(a) => format!(
            "{} {}",
            ledger::format_minor(a, precision),
            v["currency"].as_str().unwrap_or("")
        ),
        None => "-".into(),
    }
}

/// A card number as told after it was created: its last four.
pub fn masked(number: &str) -> String {
    let tail = number.get(number.len().saturating_sub(4)..).unwrap_or("");
    format!("****{tail}")
}

/// One line about an enveloped request: refused, no callback, declined, or what it did.
pub fn outcome(o: &Outcome) -> String {
    if o.status != 200 {
        let e = o.ack_json();
        return format!(
            "refused by the authorizer: HTTP {} {} ({})",
            o.status,
            e["error"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        );
    }
    if o.callback.is_none() {
        return format!(
            "acknowledged ({}), but no callback arrived in time",
            String::from_utf8_lossy(&o.ack)
        );
    }
    let r = o.result();
    let signed = if o.callback_signed {
        "signature ok"
    } else {
        "SIGNATURE DOES NOT VERIFY"
    };
    let d = &r["data"];
    let said = if r["result"] == "Success" {
        match o.action {
            "Create" => format!(
                "approved: {} card {} ({}), balance {}",
                d["type"].as_str().unwrap_or("?"),
                d["number"].as_str().unwrap_or("?"),
                d["status"].as_str().unwrap_or("?"),
                amount(&d["balance"])
            ),
            "Lookup" => format!(
                "card {} is {}, {} spendable",
                masked(d["number"].as_str().unwrap_or("")),
                d["status"].as_str().unwrap_or("?"),
                amount(&d["balance"])
            ),
            "Cancel" if d["already_cancelled"] == true => format!(
                "already cancelled earlier: nothing moved, balance {}",
                amount(&d["balance"])
            ),
            "Cancel" => format!(
                "approved: {} reversed, balance {} (payment {})",
                amount(&d["amount"]),
                amount(&d["balance"]),
                d["external_payment_id"].as_str().unwrap_or("?")
            ),
            _ => format!(
                "approved: {} {}, balance {} (transaction {}, payment {})",
                amount(&d["amount"]),
                if o.action == "Load" {
                    "loaded"
                } else {
                    "redeemed"
                },
                amount(&d["balance"]),
                d["external_transaction_id"].as_str().unwrap_or("?"),
                d["external_payment_id"].as_str().unwrap_or("?")
            ),
        }
    } else {
        format!(
            "declined: {} (code {})",
            r["error"].as_str().unwrap_or("?"),
            r["code"].as_str().unwrap_or("?")
        )
    };
    format!("{said}; callback {signed}")
}

/// The log, newest first, one line an entry.
pub fn log(l: &Log) -> Vec<String> {
    if l.status != 200 {
        return vec![format!(
            "refused by the authorizer: HTTP {} {} ({})",
            l.status,
            l.body["error"].as_str().unwrap_or("?"),
            l.body["message"].as_str().unwrap_or("")
        )];
    }
    let mut lines = vec![format!(
        "card {}: balance {}, {} entr{} (newest first)",
        masked(l.body["number"].as_str().unwrap_or("")),
        amount(&l.body["balance"]),
        l.body["entries"].as_array().map_or(0, Vec::len),
        if l.body["entries"].as_array().map_or(0, Vec::len) == 1 {
            "y"
        } else {
            "ies"
        }
    )];
    for e in l.body["entries"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  {}  {:<6} {:>14}  balance {:>14}  {}",
            e["created_at"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            amount(&e["amount"]),
            amount(&e["balance"]),
            e["external_transaction_id"].as_str().unwrap_or("?"),
        ));
    }
    lines
}

/// The ids a later Cancel needs, from a Load's or Redeem's callback.
pub fn ids(o: &Outcome) -> Option<(String, String)> {
    let d = &o.result()["data"];
    Some((
        d["external_transaction_id"].as_str()?.to_owned(),
        d["external_payment_id"].as_str()?.to_owned(),
    ))
}

/// What the demo did, for its caller to check.
#[derive(Debug, Default)]
pub struct Demo {
    pub lines: Vec<String>,
    pub number: Option<String>,
    pub outcomes: Vec<Outcome>,
    pub log: Option<Log>,
    /// Every step was approved, every callback arrived with a valid signature and the
    /// log answered.
    pub ok: bool,
}

/// A gift card's life in six steps: create it (empty), load `load`, redeem `redeem`,
/// cancel that redeem, look it up, read its log; then the callbacks received.
pub async fn demo(sim: &Sim, load: Money, redeem: Money, print: bool) -> anyhow::Result<Demo> {
    let mut d = Demo::default();
    let say = |d: &mut Demo, line: String| {
        if print {
            println!("{line}");
        }
        d.lines.push(line);
    };
    say(
        &mut d,
        format!(
            "InStore tenant {} -> {}; callbacks to {}",
            sim.target.tenant_id, sim.target.url, sim.target.callback_prefix
        ),
    );
    let step = |d: &mut Demo, n: usize, what: String, o: Outcome| {
        let line = format!("{n}. {what}: {}", outcome(&o));
        d.outcomes.push(o);
        line
    };
    let created = sim
        .create(&NewCard {
            card_type: "GiftCard".into(),
            active: true,
            balance: Money {
                minor: 0,
                currency: load.currency,
            },
            cvc: None,
        })
        .await?;
    let number = created.result()["data"]["number"]
        .as_str()
        .map(str::to_owned);
    let line = step(&mut d, 1, "Create a gift card".into(), created);
    say(&mut d, line);
    let Some(number) = number else {
        return Ok(d);
    };
    d.number = Some(number.clone());
    let o = sim.process("Load", &number, load, None).await?;
    let line = step(&mut d, 2, format!("Load {load}"), o);
    say(&mut d, line);
    let o = sim.process("Redeem", &number, redeem, None).await?;
    let redeemed = ids(&o);
    let line = step(&mut d, 3, format!("Redeem {redeem}"), o);
    say(&mut d, line);
    if let Some((transaction, payment)) = redeemed {
        let o = sim.cancel(&number, &transaction, &payment).await?;
        let line = step(&mut d, 4, "Cancel that redeem".into(), o);
        say(&mut d, line);
    }
    let o = sim.lookup(&number, None).await?;
    let line = step(&mut d, 5, "Look the card up".into(), o);
    say(&mut d, line);
    let l = sim.log(&number, 100).await?;
    let mut lines = log(&l);
    if let Some(first) = lines.first_mut() {
        *first = format!("6. The log of {first}");
    }
    for line in lines {
        say(&mut d, line);
    }
    let callbacks = sim.callbacks();
    let verified = callbacks.iter().filter(|c| sim.signed(c)).count();
    say(
        &mut d,
        format!(
            "7. Callbacks received: {}, {} with a valid signature",
            callbacks.len(),
            verified
        ),
    );
    for c in &callbacks {
        let v: Value = serde_json::from_slice(&c.body).unwrap_or(Value::Null);
        say(
            &mut d,
            format!(
                "  {}  {:<6} {:<7} code {}  ({} bytes, x-correlation-id {})",
                v["requestId"].as_str().unwrap_or("?"),
                v["action"].as_str().unwrap_or("?"),
                v["result"].as_str().unwrap_or("?"),
                v["code"].as_str().unwrap_or("?"),
                c.body.len(),
                c.correlation_id
            ),
        );
    }
    d.ok = d.outcomes.len() == 5
        && d.outcomes.iter().all(|o| o.approved() && o.callback_signed)
        && l.status == 200
        && verified == callbacks.len();
    d.log = Some(l);
    Ok(d)
}
