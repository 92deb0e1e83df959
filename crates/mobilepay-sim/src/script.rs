//! The scripted load mode: N tills, each one PoS and one cardholder, M payments a minute in
//! all, a mix of direct and prepared flows, full and partial captures, cancels before and
//! after the approval, declines, reservations left to expire, and refunds captured by the
//! PoS or left to auto-capture. Accounts are opened and funded through the authorizer's admin
//! API (as `loadgen` does). At the end every account is read back: `held` must be 0 (every
//! reservation captured, cancelled or expired) and `posted = funded - captured + refunded`,
//! to the minor unit; the simulator must have no break.

use crate::amount::{format_minor, parse_minor};
use crate::channel::Channel;
use crate::config::Config;
use crate::signing::ChannelKey;
use crate::state::now_ms;
use processor_client::{Bearer, Method};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The authorizer.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub authorizer: String,
    /// The authorizer's admin token (opening and funding accounts, reading them back).
    #[arg(long, env = "AUTHORIZER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// A `[[channels.keys]]` pair of the authorizer.
    #[arg(long, env = "MOBILEPAY_SIM_CHANNEL_API_KEY")]
    pub channel_api_key: String,
    #[arg(long, env = "MOBILEPAY_SIM_CHANNEL_API_SECRET", hide_env_values = true)]
    pub channel_api_secret: String,
    /// Tills (PoS), each with its own cardholder.
    #[arg(long, default_value_t = 20)]
    pub tills: usize,
    /// Payments started per minute, over all tills.
    #[arg(long, default_value_t = 600)]
    pub per_minute: u64,
    /// How long payments are started: `90s`, `10m`, `1h`.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Reservation lifetime for this run (short, so that expiries happen during it).
    #[arg(long, default_value_t = 20)]
    pub expiry_secs: u64,
    /// Refunds left alone auto-capture after this.
    #[arg(long, default_value_t = 10)]
    pub refund_auto_capture_secs: u64,
    /// What each cardholder is funded with (DKK).
    #[arg(long, default_value = "1000000.00")]
    pub fund: String,
    /// RNG seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s}: like 90s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s}: like 90s, 10m, 1h")),
    };
    Ok(Duration::from_secs(secs))
}

use processor_client::support::XorShift as Rng;

/// What a payment is scripted to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Script {
    DirectFull,
    PreparedPartial,
    CancelReserved,
    CancelEarly,
    Decline,
    Expire,
    RefundCaptured,
    RefundAuto,
}

impl Script {
    fn pick(rng: &mut Rng) -> Script {
        match rng.below(100) {
            0..=34 => Script::DirectFull,
            35..=54 => Script::PreparedPartial,
            55..=62 => Script::CancelReserved,
            63..=67 => Script::CancelEarly,
            68..=71 => Script::Decline,
            72..=79 => Script::Expire,
            80..=91 => Script::RefundCaptured,
            _ => Script::RefundAuto,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Script::DirectFull => "direct, full capture",
            Script::PreparedPartial => "prepared, partial capture",
            Script::CancelReserved => "cancel in Reserved",
            Script::CancelEarly => "cancel before approval",
            Script::Decline => "customer declines",
            Script::Expire => "left to expire",
            Script::RefundCaptured => "capture, refund captured",
            Script::RefundAuto => "capture, refund auto-captured",
        }
    }
}

/// One cardholder's expected money.
#[derive(Debug, Default, Clone)]
struct Book {
    captured: i64,
    refunded: i64,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub seconds: f64,
    pub tills: usize,
    pub started: u64,
    pub by_script: BTreeMap<&'static str, u64>,
    pub reserved: u64,
    pub not_reserved: u64,
    pub captures: u64,
    pub partial_captures: u64,
    pub cancels: u64,
    pub expiries: u64,
    pub refunds: u64,
    pub errors: Vec<String>,
    pub reserve_latency_ms: (u64, f64, f64, f64),
    pub breaks: u64,
    pub break_list: Vec<String>,
    pub accounts_checked: usize,
    pub money_mismatches: Vec<String>,
    pub captured_total: i64,
    pub refunded_total: i64,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.breaks == 0 && self.money_mismatches.is_empty() && self.errors.is_empty()
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mobilepay-sim load: {} tills, {:.0} s",
            self.tills, self.seconds
        );
        let _ = writeln!(s, "  payments started        {}", self.started);
        for (k, v) in &self.by_script {
            let _ = writeln!(s, "    {k:<30} {v}");
        }
        let _ = writeln!(s, "  reserved                {}", self.reserved);
        let _ = writeln!(s, "  not reserved (declined) {}", self.not_reserved);
        let _ = writeln!(
            s,
            "  captures                {} ({} partial)",
            self.captures, self.partial_captures
        );
        let _ = writeln!(s, "  cancels in Reserved     {}", self.cancels);
        let _ = writeln!(s, "  expiries                {}", self.expiries);
        let _ = writeln!(s, "  refunds                 {}", self.refunds);
        let (n, p50, p99, max) = self.reserve_latency_ms;
        let _ = writeln!(
            s,
            "  reservation latency     n={n} p50={p50:.2} ms p99={p99:.2} ms max={max:.2} ms"
        );
        let _ = writeln!(
            s,
            "  captured / refunded     {} / {} DKK",
            format_minor(self.captured_total),
            format_minor(self.refunded_total)
        );
        let _ = writeln!(s, "  breaks                  {}", self.breaks);
        let _ = writeln!(
            s,
            "  accounts checked        {} ({} mismatches)",
            self.accounts_checked,
            self.money_mismatches.len()
        );
        for b in self.break_list.iter().take(20) {
            let _ = writeln!(s, "    BREAK {b}");
        }
        for m in self.money_mismatches.iter().take(20) {
            let _ = writeln!(s, "    MISMATCH {m}");
        }
        for e in self.errors.iter().take(20) {
            let _ = writeln!(s, "    ERROR {e}");
        }
        let _ = writeln!(
            s,
            "  result                  {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}

struct Http {
    client: awc::Client,
    sim: String,
    token: String,
    admin: Bearer,
}

impl Http {
    async fn call(
        &self,
        req: awc::ClientRequest,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let bytes = res.body().limit(1 << 20).await?;
        Ok((
            res.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn pos(&self, path: &str, q: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
        let mut all = vec![
            ("bioCode", "bio-load"),
            ("accessToken", self.token.as_str()),
        ];
        all.extend_from_slice(q);
        let req = self
            .client
            .get(format!("{}/api/pos/{path}", self.sim))
            .query(&all)?;
        self.call(req, None).await
    }

    async fn customer(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let req = self
            .client
            .post(format!("{}/sim/{path}", self.sim))
            .insert_header(("authorization", format!("Bearer {}", self.token)));
        self.call(req, Some(body)).await
    }

    /// The customer checks in at `terminal`.
    async fn check_in(&self, terminal: &str, user: &str) -> anyhow::Result<Value> {
        ok(self
            .customer("checkin", json!({"terminalId": terminal, "user_id": user}))
            .await)
    }

    /// An admin call, retried while the authorizer is busy or failing.
    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        for attempt in 0..50u64 {
            match self
                .admin
                .call(method.clone(), path, body.as_ref(), key)
                .await
            {
                Ok((429, _)) | Ok((500..=599, _)) | Err(_) if attempt < 49 => {
                    actix_rt::time::sleep(Duration::from_millis(100 + 50 * attempt)).await;
                }
                r => return Ok(r?),
            }
        }
        anyhow::bail!("admin {path}: no answer")
    }
}

/// Runs the script; the summary says whether the money checks out.
pub fn run(args: LoadArgs) -> anyhow::Result<Summary> {
    actix_rt::System::new().block_on(run_async(args))
}

async fn run_async(args: LoadArgs) -> anyhow::Result<Summary> {
    let fund = parse_minor(&args.fund).ok_or_else(|| anyhow::anyhow!("--fund {}", args.fund))?;
    let run_id = format!("{:x}", now_ms() % 0xff_ffff);
    let token = crate::model::guid().replace('-', "");
    let terminals: Vec<String> = (0..args.tills)
        .map(|i| format!(r#"{{ terminalId = "LT-{i}", storeId = "st-load", currency = "DKK", mcc = "7832", posId = "lpos-{run_id}-{i}" }}"#))
        .collect();
    let cfg = Config::from_toml(&format!(
        r#"
authorizer_url = "{}"
channel_api_key = "{}"
channel_api_secret = "{}"
reservation_expiry_secs = {}
refund_auto_capture_secs = {}
[[merchants]]
bioCode = "bio-load"
accessToken = "{token}"
name = "Load Cinema"
stores = [{{ storeId = "st-load", name = "Load Cinema" }}]
terminals = [{}]
"#,
        args.authorizer,
        args.channel_api_key,
        args.channel_api_secret,
        args.expiry_secs,
        args.refund_auto_capture_secs,
        terminals.join(",\n")
    ))?;
    let sim = crate::Sim::start(cfg).await?;
    let client = awc::Client::builder()
        .connector(
            awc::Connector::new()
                .rustls_0_23(processor_client::tls_from_env())
                .limit(args.tills * 2 + 8),
        )
        .timeout(Duration::from_secs(60))
        .finish();
    let http = Rc::new(Http {
        client: client.clone(),
        sim: sim.base.clone(),
        token,
        admin: Bearer::new(client, &args.authorizer, &args.admin_token),
    });
    // Accounts: one cardholder per till.
    let users: Vec<String> = (0..args.tills)
        .map(|i| format!("mp-load-{run_id}-{i}"))
        .collect();
    for u in &users {
        let (s, v) = http
            .admin(Method::PUT, &format!("/v1/accounts/{u}/DKK"), None, None)
            .await?;
        anyhow::ensure!(s == 200 || s == 201, "open {u}: {s} {v}");
        let (s, v) = http
            .admin(
                Method::POST,
                &format!("/v1/accounts/{u}/DKK/deposits"),
                Some(json!({"amount": format_minor(fund)})),
                Some(&format!("fund-{u}")),
            )
            .await?;
        anyhow::ensure!(s == 201 || s == 200, "fund {u}: {s} {v}");
    }
    let summary = Rc::new(RefCell::new(Summary {
        tills: args.tills,
        ..Summary::default()
    }));
    let expiring: Rc<RefCell<Vec<(String, i64)>>> = Rc::default();
    let started = Instant::now();
    let interval =
        Duration::from_secs_f64(60.0 * args.tills as f64 / args.per_minute.max(1) as f64);
    let seed = args.seed.unwrap_or_else(|| now_ms() as u64 | 1);
    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (http, summary, expiring, user) = (
            http.clone(),
            summary.clone(),
            expiring.clone(),
            user.clone(),
        );
        let duration = args.duration;
        let expiry_ms = (args.expiry_secs * 1000) as i64;
        tasks.push(actix_rt::spawn(async move {
            let mut rng = Rng((seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            let mut book = Book::default();
            // Spread the tills' first payments over one interval.
            let mut due =
                started + interval.mul_f64(i as f64 / (summary.borrow().tills.max(1)) as f64);
            let mut n = 0u64;
            while started.elapsed() < duration {
                actix_rt::time::sleep_until(due.into()).await;
                due += interval;
                n += 1;
                let script = Script::pick(&mut rng);
                if let Err(e) = payment(
                    &http, &summary, &expiring, &mut rng, &mut book, i, &user, n, script, expiry_ms,
                )
                .await
                {
                    summary
                        .borrow_mut()
                        .errors
                        .push(format!("till {i} payment {n} ({}): {e:#}", script.name()));
                }
            }
            (user, book)
        }));
    }
    let mut books = Vec::new();
    for t in tasks {
        books.push(t.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    // Settle: every owed call answered, every reservation left alone past its expiry, every
    // refund left alone auto-captured and delivered.
    let last_due = expiring.borrow().iter().map(|(_, d)| *d).max().unwrap_or(0);
    let refunds_due = now_ms() + (args.refund_auto_capture_secs * 1000) as i64;
    let until = last_due.max(refunds_due) + 1500;
    while now_ms() < until {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while sim
        .shared
        .stats
        .pending
        .load(std::sync::atomic::Ordering::SeqCst)
        > 0
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "deliveries still pending after 120 s"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    // Overdue holds are expired lazily by a read, whether or not the sweeper got there.
    let channel = Channel::new(
        &args.authorizer,
        ChannelKey::new(&args.channel_api_key, &args.channel_api_secret)?,
        Duration::from_secs(10),
        2,
    );
    let ids: Vec<String> = expiring.borrow().iter().map(|(id, _)| id.clone()).collect();
    let mut expiries = 0;
    let mut errors = Vec::new();
    for id in &ids {
        match channel.get_reservation(id).await {
            Ok(a) if a.json()["state"] == "EXPIRED" => expiries += 1,
            Ok(a) => errors.push(format!(
                "reservation {id} left to expire is {}: {}",
                a.status,
                a.message()
            )),
            Err(e) => errors.push(format!("reservation {id}: {e}")),
        }
    }
    // Every account read back, then the money check.
    let mut accounts = Vec::new();
    for (user, _) in &books {
        accounts.push(
            http.admin(Method::GET, &format!("/v1/accounts/{user}/DKK"), None, None)
                .await?,
        );
    }
    let mut s = std::mem::take(&mut *summary.borrow_mut());
    s.expiries = expiries;
    s.errors.extend(errors);
    for ((user, book), (st, v)) in books.iter().zip(accounts) {
        s.accounts_checked += 1;
        let posted = v["posted"].as_str().and_then(parse_signed);
        let held = v["held"].as_str().and_then(parse_signed);
        let expected = fund - book.captured + book.refunded;
        if st != 200 || posted != Some(expected) || held != Some(0) {
            s.money_mismatches.push(format!(
                "{user}: posted {:?} held {:?}, expected posted {} held 0.00 ({st})",
                v["posted"],
                v["held"],
                format_minor(expected)
            ));
        }
        s.captured_total += book.captured;
        s.refunded_total += book.refunded;
    }
    s.seconds = seconds;
    s.breaks = sim
        .shared
        .stats
        .breaks
        .load(std::sync::atomic::Ordering::SeqCst);
    s.reserve_latency_ms = sim.shared.reserve_latency_ms();
    if let Some(list) = sim.shared.breaks_json()["breaks"].as_array() {
        s.break_list = list.iter().map(Value::to_string).collect();
    }
    sim.stop().await;
    Ok(s)
}

/// "-1.50" or "2.00" in minor units (balances may be any sign in principle).
fn parse_signed(t: &str) -> Option<i64> {
    match t.strip_prefix('-') {
        Some(r) => parse_minor(r).map(|m| -m),
        None if t == "0.00" || t == "0" => Some(0),
        None => parse_minor(t),
    }
}

fn ok_id(r: anyhow::Result<(u16, Value)>, field: &str) -> anyhow::Result<String> {
    let (s, v) = r?;
    anyhow::ensure!(s == 200, "{s} {v}");
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {field}: {v}"))
}

fn ok(r: anyhow::Result<(u16, Value)>) -> anyhow::Result<Value> {
    let (s, v) = r?;
    anyhow::ensure!(s == 200, "{s} {v}");
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
async fn payment(
    http: &Http,
    summary: &RefCell<Summary>,
    expiring: &RefCell<Vec<(String, i64)>>,
    rng: &mut Rng,
    book: &mut Book,
    till: usize,
    user: &str,
    n: u64,
    script: Script,
    expiry_ms: i64,
) -> anyhow::Result<()> {
    {
        let mut s = summary.borrow_mut();
        s.started += 1;
        *s.by_script.entry(script.name()).or_default() += 1;
    }
    let terminal = format!("LT-{till}");
    let order = format!("o-{till}-{n}");
    let amount = 1000 + rng.below(49_000) as i64;
    let amount_text = format_minor(amount);
    let id = if script == Script::PreparedPartial {
        let id = ok_id(
            http.pos(
                "payment/prepare",
                &[("orderId", &order), ("terminalId", &terminal)],
            )
            .await,
            "paymentId",
        )?;
        http.check_in(&terminal, user).await?;
        ok(http
            .pos(
                "payment/ready",
                &[
                    ("orderId", &order),
                    ("amount", &amount_text),
                    ("terminalId", &terminal),
                    ("currencyCode", "DKK"),
                    ("paymentId", &id),
                ],
            )
            .await)?;
        id
    } else {
        let id = ok_id(
            http.pos(
                "payment/start",
                &[
                    ("orderId", &order),
                    ("amount", &amount_text),
                    ("terminalId", &terminal),
                    ("currencyCode", "DKK"),
                ],
            )
            .await,
            "paymentId",
        )?;
        http.check_in(&terminal, user).await?;
        id
    };
    match script {
        Script::Decline => {
            ok(http
                .customer(&format!("payments/{id}/decline"), json!({}))
                .await)?;
            return Ok(());
        }
        Script::CancelEarly => {
            ok(http.pos("payment/cancel", &[("paymentId", &id)]).await)?;
            return Ok(());
        }
        _ => {}
    }
    let approved = ok(http
        .customer(&format!("payments/{id}/approve"), json!({}))
        .await)?;
    if approved["status"] != "Reserved" {
        summary.borrow_mut().not_reserved += 1;
        return Ok(());
    }
    summary.borrow_mut().reserved += 1;
    match script {
        Script::CancelReserved => {
            ok(http.pos("payment/cancel", &[("paymentId", &id)]).await)?;
            summary.borrow_mut().cancels += 1;
        }
        Script::Expire => expiring.borrow_mut().push((id, now_ms() + expiry_ms)),
        Script::PreparedPartial => {
            let c = 1 + rng.below((amount - 1) as u64) as i64;
            ok(http
                .pos(
                    "payment/capture",
                    &[("paymentId", &id), ("amount", &format_minor(c))],
                )
                .await)?;
            book.captured += c;
            let mut s = summary.borrow_mut();
            s.captures += 1;
            s.partial_captures += 1;
        }
        _ => {
            ok(http.pos("payment/capture", &[("paymentId", &id)]).await)?;
            book.captured += amount;
            summary.borrow_mut().captures += 1;
            if matches!(script, Script::RefundCaptured | Script::RefundAuto) {
                let r = 1 + rng.below(amount as u64) as i64;
                let rid = ok_id(
                    http.pos(
                        "refund/create",
                        &[
                            ("amount", &format_minor(r)),
                            ("currencyCode", "DKK"),
                            ("paymentId", &id),
                            ("refundOrderId", &format!("r-{order}")),
                        ],
                    )
                    .await,
                    "refundId",
                )?;
                if script == Script::RefundCaptured {
                    ok(http.pos("refund/capture", &[("refundId", &rid)]).await)?;
                }
                book.refunded += r;
                summary.borrow_mut().refunds += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn the_mix_uses_every_script() {
        let mut rng = Rng(42);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            seen.insert(Script::pick(&mut rng));
        }
        assert_eq!(seen.len(), 8);
    }
}
