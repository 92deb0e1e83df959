//! The report: report.json, a compact table on stdout, and two SVG plots.

use crate::cli::{Config, Mode};
use crate::mix::Kind;
use crate::schedule::Phases;
use crate::stats::Recorder;
use crate::verify::{Audit, Money};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Latency summary in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
}

impl Latency {
    /// The summary of no request at all.
    pub const NONE: Latency = Latency {
        count: 0,
        mean: 0.0,
        p50: 0,
        p90: 0,
        p99: 0,
        p99_9: 0,
        max: 0,
    };

    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::NONE;
        }
        Latency {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    /// Sent in the measured window.
    pub sent: u64,
    /// Of those, answered (any HTTP status).
    pub answered: u64,
    /// Sent in the whole run, warm-up included.
    pub sent_total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// The target rate (open loop); `None` in a closed loop, which offers as fast as answered.
    pub offered_rps: Option<f64>,
    /// Answers per second in the measured window.
    pub achieved_rps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub sent: u64,
    pub latency_us: Latency,
    pub decisions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: usize,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What a turn's command did (`--turn-cmd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnCommand {
    /// How long it ran.
    pub ms: u64,
    /// Whether it exited 0.
    pub ok: bool,
}

/// One turn of a run cut into turns: its command and the latency of the requests due in it
/// after its skipped start.
#[derive(Debug, Clone, Serialize)]
pub struct TurnReport {
    pub turn: usize,
    pub command_ms: u64,
    pub command_ok: bool,
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub target_rate: Option<f64>,
    pub connections: Option<u32>,
    pub threads: u32,
    pub url: String,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub accounts: u32,
    pub skew: String,
    pub seed: u64,
    pub currency: String,
    pub user_prefix: String,
    pub mix: BTreeMap<String, u32>,
    pub requests: Requests,
    pub throughput: Throughput,
    /// From the due time (open loop) or the send (closed loop) to the complete answer.
    pub latency_us: Latency,
    /// How late requests left compared to their due time: the client's own share.
    pub client_lag_us: Latency,
    pub by_kind: BTreeMap<String, KindReport>,
    pub decisions: BTreeMap<String, u64>,
    /// Errors by kind, warm-up included.
    pub errors: BTreeMap<String, u64>,
    /// HTTP 425 answers (not errors: the processor retries them).
    pub too_early: u64,
    /// The first requests that failed a check, with their answers.
    pub error_examples: Vec<crate::stats::Sample>,
    pub money: Money,
    pub audit: Option<Audit>,
    pub timeline: Vec<Second>,
    /// The turns (`--turn`), in order; empty when the window is not cut.
    pub turns: Vec<TurnReport>,
    /// How much of each turn's start its figures leave out (`--turn-skip`).
    pub turn_skip_s: Option<f64>,
    pub passed: bool,
    pub failures: Vec<String>,
}

pub fn build(
    cfg: &Config,
    phases: Phases,
    rec: &Recorder,
    sent_total: u64,
    money: Money,
    audit: Option<Audit>,
    commands: &[TurnCommand],
) -> Report {
    let (mode, target_rate, connections) = match cfg.mode {
        Mode::Open { rate } => ("open", Some(rate), None),
        Mode::Closed { connections } => ("closed", None, Some(connections)),
    };
    let secs = phases.duration.as_secs_f64();
    let by_kind = Kind::ALL
        .iter()
        .filter(|k| rec.sent[k.index()] > 0)
        .map(|k| {
            (
                k.name().to_owned(),
                KindReport {
                    sent: rec.sent[k.index()],
                    latency_us: Latency::of(rec.by_kind(*k)),
                    decisions: rec.decisions[k.index()].clone(),
                },
            )
        })
        .collect();
    let timeline = rec
        .per_second()
        .iter()
        .enumerate()
        .map(|(second, h)| {
            let l = Latency::of(h);
            Second {
                second,
                count: l.count,
                p50_us: l.p50,
                p99_us: l.p99,
                max_us: l.max,
            }
        })
        .collect();
    let turns: Vec<TurnReport> = commands
        .iter()
        .enumerate()
        .map(|(turn, c)| TurnReport {
            turn,
            command_ms: c.ms,
            command_ok: c.ok,
            latency_us: rec.per_turn().get(turn).map_or(Latency::NONE, Latency::of),
        })
        .collect();
    let mut failures = Vec::new();
    let skip = phases.turns.map(|c| c.skip);
    for t in &turns {
        if !t.command_ok {
            failures.push(format!("the command of turn {} failed", t.turn));
        } else if skip.is_some_and(|skip| u128::from(t.command_ms) > skip.as_millis()) {
            failures.push(format!(
                "the command of turn {} took {} ms, past the turn's skipped start",
                t.turn, t.command_ms
            ));
        }
    }
    let errors = rec.error_count();
    if errors > 0 {
        let list: Vec<String> = rec.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        failures.push(format!("{errors} errors ({})", list.join(", ")));
    }
    if money.mismatches > 0 {
        failures.push(format!(
            "{} of {} accounts do not hold the expected balance",
            money.mismatches, money.accounts_checked
        ));
    }
    if !money.unresolved.is_empty() {
        failures.push(format!(
            "{} requests never got a definite answer",
            money.unresolved.len()
        ));
    }
    if let Some(a) = audit.as_ref().filter(|a| !a.passed) {
        failures.push(format!("audit command exited {:?}", a.exit_code));
    }
    if rec.answered == 0 {
        failures.push("no request was answered in the measured window".into());
    }
    Report {
        mode,
        target_rate,
        connections,
        threads: cfg.threads,
        url: cfg.url.clone(),
        duration_s: secs,
        warmup_s: phases.warmup.as_secs_f64(),
        accounts: cfg.accounts,
        skew: cfg.skew.to_string(),
        seed: cfg.seed,
        currency: cfg.currency.clone(),
        user_prefix: cfg.user_prefix.clone(),
        mix: Kind::ALL
            .iter()
            .filter(|k| cfg.mix.weight(**k) > 0)
            .map(|k| (k.name().to_owned(), cfg.mix.weight(*k)))
            .collect(),
        requests: Requests {
            sent: rec.sent.iter().sum(),
            answered: rec.answered,
            sent_total,
        },
        throughput: Throughput {
            offered_rps: target_rate,
            achieved_rps: ((rec.answered as f64 / secs) * 10.0).round() / 10.0,
        },
        latency_us: Latency::of(rec.overall()),
        client_lag_us: Latency::of(rec.lag()),
        by_kind,
        decisions: rec.all_decisions(),
        errors: rec.errors.clone(),
        too_early: rec.too_early,
        error_examples: rec.samples.clone(),
        money,
        audit,
        timeline,
        turns,
        turn_skip_s: skip.map(|d| d.as_secs_f64()),
        passed: failures.is_empty(),
        failures,
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The compact table printed on stdout.
pub fn table(r: &Report, out: &Path) -> String {
    let mut s = String::new();
    let offered = match r.throughput.offered_rps {
        Some(o) => format!("{o}/s offered"),
        None => format!("closed loop, {} connections", r.connections.unwrap_or(0)),
    };
    let _ = writeln!(
        s,
        "loadgen: {} loop against {}, {:.0}s measured after {:.0}s warm-up, {} accounts ({}), seed {}",
        r.mode, r.url, r.duration_s, r.warmup_s, r.accounts, r.skew, r.seed
    );
    let _ = writeln!(
        s,
        "throughput     {:.1}/s achieved, {offered}; {} sent, {} answered ({} in the whole run)",
        r.throughput.achieved_rps, r.requests.sent, r.requests.answered, r.requests.sent_total
    );
    let _ = writeln!(
        s,
        "\n{:<15}{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}   (ms)",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    let mut row = |name: &str, l: &Latency| {
        let _ = writeln!(
            s,
            "{:<15}{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}",
            name,
            l.count,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p99_9),
            ms(l.max)
        );
    };
    row("all", &r.latency_us);
    for (k, kr) in &r.by_kind {
        row(k, &kr.latency_us);
    }
    if r.mode == "open" {
        row("client lag", &r.client_lag_us);
    }
    if !r.turns.is_empty() {
        let mut took: Vec<u64> = r.turns.iter().map(|t| t.command_ms).collect();
        took.sort_unstable();
        let _ = writeln!(
            s,
            "turns          {}, the first {:.1}s of each left out; commands took {} ms at the \
             median, {} ms at most; each turn's latency in report.json",
            r.turns.len(),
            r.turn_skip_s.unwrap_or_default(),
            took[took.len() / 2],
            took[took.len() - 1]
        );
    }
    let _ = writeln!(s, "\ndecisions      {}", counts(&r.decisions));
    for (k, kr) in &r.by_kind {
        let _ = writeln!(s, "  {k:<13}{}", counts(&kr.decisions));
    }
    let _ = writeln!(
        s,
        "errors         {}{}",
        if r.errors.is_empty() {
            "none".to_owned()
        } else {
            counts(&r.errors)
        },
        if r.too_early > 0 {
            format!("; 425 too early: {}", r.too_early)
        } else {
            String::new()
        }
    );
    for e in r.error_examples.iter().take(3) {
        let _ = writeln!(
            s,
            "  e.g. {} on {} {} ({}): {}{}",
            e.error,
            e.kind,
            e.idempotency_key,
            e.status
                .map_or("no answer".to_owned(), |st| format!("HTTP {st}")),
            e.answer.as_deref().unwrap_or("-"),
            e.expected
                .as_deref()
                .map_or(String::new(), |x| format!(", first answer {x}"))
        );
    }
    let _ = writeln!(
        s,
        "money          {} accounts read back, {} mismatches{}",
        r.money.accounts_checked,
        r.money.mismatches,
        if r.money.unresolved.is_empty() {
            String::new()
        } else {
            format!(", {} unresolved requests", r.money.unresolved.len())
        }
    );
    for m in &r.money.examples {
        let _ = writeln!(
            s,
            "  {}: expected {}, found {}",
            m.user, m.expected, m.actual
        );
    }
    if let Some(a) = &r.audit {
        let _ = writeln!(
            s,
            "audit          {} -> {}",
            a.command,
            if a.passed {
                "exit 0".to_owned()
            } else {
                format!("FAILED ({:?})", a.exit_code)
            }
        );
        for line in a
            .output
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = writeln!(s, "  {line}");
        }
    }
    let _ = writeln!(s, "report         {}", out.display());
    if r.passed {
        let _ = writeln!(s, "PASSED");
    } else {
        let _ = writeln!(s, "FAILED: {}", r.failures.join("; "));
    }
    s
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes report.json and the two plots into `dir`.
pub fn write(r: &Report, rec: &Recorder, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_vec_pretty(r)?;
    std::fs::write(dir.join("report.json"), json)
        .with_context(|| format!("cannot write {}", dir.join("report.json").display()))?;
    crate::plot::over_time(&r.timeline, &dir.join("latency-over-time.svg"))?;
    crate::plot::percentiles(rec.overall(), &dir.join("latency-percentiles.svg"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;
    use std::time::{Duration, Instant};

    fn config() -> Config {
        let run = [
            "--rate",
            "500",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--accounts",
            "10",
        ];
        Cli::try_parse_from([&crate::cli::tests::CREDENTIALS[..], &run[..]].concat())
            .unwrap()
            .resolve()
            .unwrap()
    }

    fn recorder(phases: Phases) -> Recorder {
        let mut rec = Recorder::new(phases);
        let t = phases.start;
        for i in 0..1000u64 {
            let due = t + Duration::from_millis(i * 2);
            rec.sent[Kind::Purchase.index()] += 1;
            rec.answered += 1;
            rec.latency(
                Kind::Purchase,
                due,
                due,
                due + Duration::from_micros(1000 + i),
            );
            rec.decision(
                Kind::Purchase,
                if i % 10 == 0 {
                    "INSUFFICIENT_FUNDS"
                } else {
                    "APPROVED"
                },
            );
        }
        rec
    }

    #[test]
    fn report_json_has_its_shape() {
        let phases = Phases {
            start: Instant::now(),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            turns: None,
        };
        let rec = recorder(phases);
        let r = build(&config(), phases, &rec, 1000, Money::default(), None, &[]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["mode"], "open");
        assert_eq!(v["target_rate"], 500.0);
        assert_eq!(v["throughput"]["offered_rps"], 500.0);
        assert_eq!(v["throughput"]["achieved_rps"], 500.0);
        assert_eq!(v["requests"]["sent"], 1000);
        for p in ["p50", "p90", "p99", "p99_9", "max", "count", "mean"] {
            assert!(v["latency_us"][p].is_number(), "latency_us.{p}");
            assert!(v["client_lag_us"][p].is_number(), "client_lag_us.{p}");
        }
        let p50 = v["latency_us"]["p50"].as_u64().unwrap();
        assert!((1400..=1600).contains(&p50), "p50 {p50}");
        assert!(v["latency_us"]["max"].as_u64().unwrap() >= 1999);
        assert_eq!(v["decisions"]["APPROVED"], 900);
        assert_eq!(v["decisions"]["INSUFFICIENT_FUNDS"], 100);
        assert_eq!(v["by_kind"]["purchase"]["sent"], 1000);
        assert!(v["by_kind"]["purchase"]["latency_us"]["p99"].is_number());
        assert!(v["errors"].as_object().unwrap().is_empty());
        assert!(v["error_examples"].as_array().unwrap().is_empty());
        assert_eq!(v["money"]["mismatches"], 0);
        assert!(v["money"]["examples"].is_array());
        assert!(v["audit"].is_null());
        let timeline = v["timeline"].as_array().unwrap();
        assert_eq!(timeline.len(), 2);
        for s in timeline {
            for f in ["second", "count", "p50_us", "p99_us", "max_us"] {
                assert!(s[f].is_number(), "timeline.{f}");
            }
        }
        assert_eq!(v["mix"]["purchase"], 70);
        assert_eq!(v["passed"], true);
        assert!(v["failures"].as_array().unwrap().is_empty());
        assert!(v["turns"].as_array().unwrap().is_empty());
        assert!(v["turn_skip_s"].is_null());
    }

    #[test]
    fn turns_are_reported_and_a_failed_or_late_command_fails_the_run() {
        let phases = Phases::in_turns(2_000, 1_000, 200);
        let rec = recorder(phases);
        let report = |commands: &[TurnCommand]| {
            build(
                &config(),
                phases,
                &rec,
                1000,
                Money::default(),
                None,
                commands,
            )
        };
        let ok = TurnCommand { ms: 40, ok: true };
        let r = report(&[ok, ok]);
        assert!(r.passed, "{:?}", r.failures);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["turn_skip_s"], 0.2);
        let turns = v["turns"].as_array().unwrap();
        assert_eq!(turns.len(), 2);
        for (i, t) in turns.iter().enumerate() {
            assert_eq!(t["turn"], i);
            assert_eq!(t["command_ms"], 40);
            // 500 requests due in each second, the first 200 ms of it left out.
            assert_eq!(t["latency_us"]["count"], 400, "turn {i}");
        }
        let failed = TurnCommand { ms: 3, ok: false };
        let late = TurnCommand { ms: 250, ok: true };
        let r = report(&[failed, late]);
        assert!(!r.passed);
        assert_eq!(r.failures.len(), 2, "{:?}", r.failures);
        assert!(r.failures[0].contains("turn 0 failed"), "{:?}", r.failures);
        assert!(
            r.failures[1].contains("turn 1 took 250 ms"),
            "{:?}",
            r.failures
        );
    }

    #[test]
    fn failures_fail_the_report_and_files_are_written() {
        let phases = Phases {
            start: Instant::now(),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            turns: None,
        };
        let mut rec = recorder(phases);
        rec.error("signature");
        let money = Money {
            accounts_checked: 10,
            mismatches: 1,
            examples: vec![crate::verify::Mismatch {
                user: "lg-x-1".into(),
                expected: "10.00".into(),
                actual: "9.99".into(),
            }],
            unresolved: vec![],
        };
        let r = build(&config(), phases, &rec, 1000, money, None, &[]);
        assert!(!r.passed);
        assert_eq!(r.failures.len(), 2, "{:?}", r.failures);
        let dir = tempfile::tempdir().unwrap();
        write(&r, &rec, dir.path()).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(back["errors"]["signature"], 1);
        for svg in ["latency-over-time.svg", "latency-percentiles.svg"] {
            let text = std::fs::read_to_string(dir.path().join(svg)).unwrap();
            assert!(
                text.starts_with("<svg") && text.contains("polyline"),
                "{svg}"
            );
        }
        let t = table(&r, dir.path());
        assert!(
            t.contains("FAILED") && t.contains("lg-x-1: expected 10.00, found 9.99"),
            "{t}"
        );
    }
}
