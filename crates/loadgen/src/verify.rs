//! Before and after the traffic: open and fund the accounts, resolve unknown outcomes, read
//! every touched account back and compare to the book, run the audit command.

use crate::http::{Failure, Http};
use crate::money::{format_minor, parse_minor};
use crate::run::Shared;
use crate::stats::Recorder;
use crate::traffic::Planned;
use anyhow::{Context, bail};
use awc::http::Method;
use futures_util::{StreamExt, stream};
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// An admin call, tried again on a transient failure (no answer, 5xx) and, after a pause,
/// when the admin API's rate limit refuses it (429). Opening is idempotent and deposits
/// carry an Idempotency-Key, so a retry never funds twice.
async fn admin(
    http: &Http,
    method: Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut last = None;
    let mut limited = 0u32;
    let mut attempt = 0u32;
    while attempt < 5 {
        match http.admin(method.clone(), path, body.clone(), key).await {
            Ok((429, v)) if limited < 600 => {
                // Rate limited: wait (Retry-After is whole seconds; a short pause suffices
                // for a refilling bucket) without spending an attempt.
                limited += 1;
                last = Some(anyhow::anyhow!("HTTP 429: {v}"));
                actix_rt::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok((s, v)) if s < 500 => return Ok((s, v)),
            Ok((s, v)) => last = Some(anyhow::anyhow!("HTTP {s}: {v}")),
            Err(e) => last = Some(e),
        }
        attempt += 1;
        actix_rt::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer")))
}

fn available(v: &Value, exponent: u8) -> anyhow::Result<i64> {
    let text = v
        .get("available")
        .and_then(Value::as_str)
        .context("the answer has no \"available\" string")?;
    parse_minor(text, exponent)
}

/// Opens every account (idempotent), deposits `--fund` into it and sets `--controls` on it;
/// the balance the deposit answer reports is where the book starts.
pub async fn open_accounts(shared: &Shared, http: &Http, bar: &ProgressBar) -> anyhow::Result<()> {
    let cfg = &shared.cfg;
    let fund = format_minor(cfg.fund, cfg.exponent);
    let results = stream::iter(0..cfg.accounts)
        .map(|i| {
            let fund = &fund;
            async move {
                let user = shared.traffic.user(i);
                let path = format!("/v1/accounts/{user}/{}", cfg.currency);
                let (status, v) = admin(http, Method::PUT, &path, None, None)
                    .await
                    .with_context(|| format!("opening {user}"))?;
                if status != 200 && status != 201 {
                    bail!("opening {user}: HTTP {status} {v}");
                }
                let v = if cfg.fund > 0 {
                    let key = format!("{}-fund-{i}", shared.traffic.prefix);
                    let body = json!({ "amount": fund, "reference": "loadgen funding" });
                    let (status, v) = admin(
                        http,
                        Method::POST,
                        &format!("{path}/deposits"),
                        Some(body),
                        Some(&key),
                    )
                    .await
                    .with_context(|| format!("funding {user}"))?;
                    if status != 200 && status != 201 {
                        bail!("funding {user}: HTTP {status} {v}");
                    }
                    v
                } else {
                    v
                };
                if let Some(doc) = &cfg.controls {
                    let (status, v) = admin(
                        http,
                        Method::PUT,
                        &format!("{path}/controls"),
                        Some(doc.clone()),
                        None,
                    )
                    .await
                    .with_context(|| format!("setting the controls of {user}"))?;
                    if status != 200 {
                        bail!("setting the controls of {user}: HTTP {status} {v}");
                    }
                }
                let minor =
                    available(&v, cfg.exponent).with_context(|| format!("funding {user}"))?;
                shared.book.set_baseline(i, minor);
                bar.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(cfg.setup_concurrency);
    futures_util::pin_mut!(results);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// Sends every request whose outcome is unknown again, same key and body (a duplicate gets the
/// first answer; one that never arrived is processed now), until it is answered. Returns the
/// idempotency keys still unresolved.
pub async fn resolve(
    shared: &Shared,
    http: &Http,
    pending: Vec<Planned>,
    rec: &mut Recorder,
) -> Vec<String> {
    if pending.is_empty() {
        return Vec::new();
    }
    eprintln!(
        "resolving {} requests without a definite answer",
        pending.len()
    );
    let unreachable = AtomicBool::new(false);
    let outcomes: Vec<(Planned, Option<crate::http::Answer>)> = stream::iter(pending)
        .map(|p| {
            let unreachable = &unreachable;
            async move {
                let mut only_refused = true;
                for attempt in 0..6u64 {
                    if unreachable.load(Ordering::Relaxed) {
                        break;
                    }
                    match http.processor(p.path, &p.key, p.body.clone()).await {
                        Ok(a) if a.status == 200 => return (p, Some(a)),
                        Ok(a) if a.status == 425 || a.status >= 500 => only_refused = false,
                        // Refused outright (400, 401, 409): nothing was booked.
                        Ok(a) => return (p, Some(a)),
                        Err(Failure::Connect) => {}
                        Err(_) => only_refused = false,
                    }
                    actix_rt::time::sleep(Duration::from_millis(250 * (attempt + 1))).await;
                }
                if only_refused {
                    unreachable.store(true, Ordering::Relaxed);
                }
                (p, None)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut left = Vec::new();
    for (p, answer) in outcomes {
        match answer {
            Some(a) => {
                let mut errors = Vec::new();
                if a.status != 401 && !a.signature_ok {
                    errors.push("signature");
                }
                if a.status == 200 {
                    shared.settle_ok(&p, &a.body, &mut errors);
                }
                for e in errors {
                    rec.error(e);
                    rec.sample(e, &p, Some(&a));
                }
            }
            None => {
                rec.error("unresolved");
                rec.sample("unresolved", &p, None);
                left.push(p.key);
            }
        }
    }
    left
}

/// One account whose balance is not what the answers said.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    pub user: String,
    pub expected: String,
    /// The balance read back, or why it could not be read.
    pub actual: String,
}

/// The money check.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Money {
    pub accounts_checked: usize,
    pub mismatches: usize,
    /// The first mismatches (at most 20).
    pub examples: Vec<Mismatch>,
    /// Idempotency keys of requests whose outcome stayed unknown.
    pub unresolved: Vec<String>,
}

/// Reads every touched account back and compares its available balance, exactly.
pub async fn read_back(
    shared: &Shared,
    http: &Http,
    touched: &[u32],
    bar: &ProgressBar,
) -> anyhow::Result<Money> {
    let cfg = &shared.cfg;
    let mut found: Vec<(u32, Mismatch)> = stream::iter(touched.iter().copied())
        .map(|i| async move {
            let user = shared.traffic.user(i);
            let expected = shared.book.expected(i);
            let path = format!("/v1/accounts/{user}/{}", cfg.currency);
            let actual = match admin(http, Method::GET, &path, None, None).await {
                Ok((200, v)) => match available(&v, cfg.exponent) {
                    Ok(m) if m == expected => None,
                    Ok(m) => Some(format_minor(m, cfg.exponent)),
                    Err(e) => Some(format!("unreadable: {e}")),
                },
                Ok((s, v)) => Some(format!("HTTP {s}: {v}")),
                Err(e) => Some(format!("no answer: {e}")),
            };
            bar.inc(1);
            actual.map(|actual| {
                (
                    i,
                    Mismatch {
                        user,
                        expected: format_minor(expected, cfg.exponent),
                        actual,
                    },
                )
            })
        })
        .buffer_unordered(cfg.setup_concurrency)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    found.sort_by_key(|(i, _)| *i);
    Ok(Money {
        accounts_checked: touched.len(),
        mismatches: found.len(),
        examples: found.into_iter().take(20).map(|(_, m)| m).collect(),
        unresolved: Vec::new(),
    })
}

/// The audit command's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub command: String,
    pub exit_code: Option<i32>,
    pub passed: bool,
    /// Last lines of its output (stdout then stderr).
    pub output: String,
}

/// Runs `command` with `sh -c`; it must exit 0.
pub fn audit(command: &str) -> Audit {
    let shown = settings::redact_command(command);
    eprintln!("running the audit: {shown}");
    match std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
    {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            Audit {
                command: shown,
                exit_code: out.status.code(),
                passed: out.status.success(),
                output: tail,
            }
        }
        Err(e) => Audit {
            command: shown,
            exit_code: None,
            passed: false,
            output: format!("could not start: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_requires_exit_zero() {
        let ok = audit("echo clean: every invariant holds");
        assert!(ok.passed);
        assert_eq!(ok.exit_code, Some(0));
        assert!(ok.output.contains("clean"));
        let bad = audit("echo 'violation: movement 3 does not sum to zero' >&2; exit 1");
        assert!(!bad.passed);
        assert_eq!(bad.exit_code, Some(1));
        assert!(bad.output.contains("violation"));
    }
}
