//! What happened, in a person's words: one line per answer, and the demo's walk through a
//! gift card's life.

use crate::sim::{Log, Money, NewCard, Outcome, Sim};
use serde_json::Value;

/// An integer written as a JSON number or as a string of digits (the pay-on-account and
/// wallet bodies carry strings).
fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

/// `{"amount":1220,"precision":2,"currency":"USD"}` (or its members as strings) as
/// `12.20 USD`.
pub fn amount(v: &Value) -> String {
    let precision = int(&v["precision"])
        .and_then(|p| u8::try_from(p).ok())
        .unwrap_or(0);
    match int(&v["amount"]) {
        Some(a) => format!(
            "{} {}",
            ledger::format_minor(a, precision),
            v["currency"].as_str().unwrap_or("")
        ),
        None => "-".into(),
    }
}

/// A wallet amount, units at precision 2 (`"2500"`), as `25.00`.
pub fn cents(v: &Value) -> String {
    int(v).map_or_else(|| "-".into(), |c| ledger::format_minor(c, 2))
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
    let said = if o.approved() {
        match o.action {
            crate::poa::CREATE | crate::poa::INQUIRY | crate::poa::UPDATE => {
                crate::poa::account_words(&r)
            }
            crate::poa::CREDIT => format!(
                "approved: charged by {}, {} owed",
                r["authorized_user_id"].as_str().unwrap_or("anyone"),
                amount(&r["balance"])
            ),
            crate::poa::LOG => format!(
                "recorded: {} of {} {} (order {})",
                r["action"].as_str().unwrap_or("?"),
                amount(&r["amount"]),
                r["status"].as_str().unwrap_or("?"),
                r["order_id"].as_str().unwrap_or("-")
            ),
            a if a.ends_with("_wallet") || a.contains("_wallet_") => crate::wallet::words(a, &r),
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
            r["error"]
                .as_str()
                .or(r["error_message"].as_str())
                .unwrap_or("?"),
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
    let (lines, verified) = callbacks(sim, &d.outcomes, 7);
    for line in lines {
        say(&mut d, line);
    }
    d.ok = d.outcomes.len() == 5
        && d.outcomes.iter().all(|o| o.approved() && o.callback_signed)
        && l.status == 200
        && verified;
    d.log = Some(l);
    Ok(d)
}

/// The callbacks received so far: a count (step `n`), then one line each with the action,
/// the result and code, its size and correlation id; and whether every one is signed
/// with the tenant's key. A callback is named by its request's action when known (the
/// wallet's bodies carry none), else by its body's.
pub fn callbacks(sim: &Sim, outcomes: &[Outcome], n: usize) -> (Vec<String>, bool) {
    let callbacks = sim.callbacks();
    let verified = callbacks.iter().filter(|c| sim.signed(c)).count();
    let mut lines = vec![format!(
        "{n}. Callbacks received: {}, {} with a valid signature",
        callbacks.len(),
        verified
    )];
    for c in &callbacks {
        let v: Value = serde_json::from_slice(&c.body).unwrap_or(Value::Null);
        let request_id = v["requestId"].as_str().unwrap_or("?");
        let action = outcomes
            .iter()
            .find(|o| o.request_id == request_id)
            .map(|o| o.action)
            .or(v["action"].as_str())
            .unwrap_or("?");
        lines.push(format!(
            "  {}  {:<6} {:<7} code {}  ({} bytes, x-correlation-id {})",
            request_id,
            action,
            v["result"].as_str().or(v["status"].as_str()).unwrap_or("?"),
            v["code"].as_str().unwrap_or("-"),
            c.body.len(),
            c.correlation_id
        ));
    }
    (lines, verified == callbacks.len())
}

/// A scripted story: its lines (printed as they come when asked), its steps numbered,
/// each step's outcome held against what was expected of it.
pub(crate) struct Teller {
    print: bool,
    step: usize,
    pub demo: Demo,
    expected: bool,
}

impl Teller {
    pub fn new(sim: &Sim, print: bool) -> Teller {
        let mut t = Teller {
            print,
            step: 0,
            demo: Demo::default(),
            expected: true,
        };
        t.say(format!(
            "InStore tenant {} -> {}; callbacks to {}",
            sim.target.tenant_id, sim.target.url, sim.target.callback_prefix
        ));
        t
    }

    pub fn say(&mut self, line: String) {
        if self.print {
            println!("{line}");
        }
        self.demo.lines.push(line);
    }

    /// The next step's number.
    pub fn next(&mut self) -> usize {
        self.step += 1;
        self.step
    }

    /// One enveloped request: approved when `approve`, else declined, and its callback
    /// signed.
    pub fn step(&mut self, what: &str, o: Outcome, approve: bool) {
        let n = self.next();
        self.say(format!("{n}. {what}: {}", outcome(&o)));
        self.expected &= o.approved() == approve && o.callback_signed;
        self.demo.outcomes.push(o);
    }

    /// A step that is not an enveloped request (an admin call, a signed GET).
    pub fn fact(&mut self, what: &str, said: String, ok: bool) {
        let n = self.next();
        self.say(format!("{n}. {what}: {said}"));
        self.expected &= ok;
    }

    /// Lists the callbacks and closes the story: `ok` when every step went as expected and
    /// every callback is signed.
    pub fn finish(mut self, sim: &Sim) -> Demo {
        let n = self.next();
        let (lines, verified) = callbacks(sim, &self.demo.outcomes, n);
        for line in lines {
            self.say(line);
        }
        self.demo.ok = self.expected && verified;
        self.demo
    }
}
