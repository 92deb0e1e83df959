//! What a worker saw: latency histograms (microseconds), decisions, errors by kind.
//! Each worker thread keeps its own [`Recorder`]; they are merged at the end.

use crate::http::Answer;
use crate::mix::Kind;
use crate::schedule::Phases;
use crate::traffic::Planned;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// How many failing requests are kept as examples.
const SAMPLES: usize = 20;

/// A request that failed a check, kept for the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sample {
    pub error: String,
    pub kind: String,
    pub path: String,
    pub idempotency_key: String,
    /// HTTP status and body of the answer, if there was one.
    pub status: Option<u16>,
    pub answer: Option<String>,
    /// For a duplicate: the first answer it should have repeated.
    pub expected: Option<String>,
}

fn text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.chars().take(400).collect()
}

/// Highest latency tracked exactly: one minute (larger values are clamped to it).
const MAX_US: u64 = 60_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("valid histogram bounds")
}

fn micros(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `v` with at least `len` histograms (new ones of `sigfig` significant figures).
fn grown(v: &mut Vec<Histogram<u64>>, len: usize, sigfig: u8) -> &mut Vec<Histogram<u64>> {
    while v.len() < len {
        v.push(histogram(sigfig));
    }
    v
}

/// Counts and latencies of one worker (or, merged, of the run).
#[derive(Debug, Clone)]
pub struct Recorder {
    phases: Phases,
    overall: Histogram<u64>,
    by_kind: Vec<Histogram<u64>>,
    /// One histogram per second of the measured window (two significant figures: small).
    per_second: Vec<Histogram<u64>>,
    /// One histogram per turn (`--turn`), its skipped start left out.
    per_turn: Vec<Histogram<u64>>,
    /// How late requests went out compared to their due time (open loop): the client's share.
    lag: Histogram<u64>,
    /// Measured requests sent, per kind.
    pub sent: [u64; 7],
    /// Measured requests that got an HTTP answer (any status).
    pub answered: u64,
    /// Decisions of measured requests, per kind.
    pub decisions: [BTreeMap<String, u64>; 7],
    /// Errors by kind, warm-up included (correctness does not warm up).
    pub errors: BTreeMap<String, u64>,
    /// HTTP 425 answers (a duplicate arrived while the first was in flight).
    pub too_early: u64,
    /// The first requests that failed a check.
    pub samples: Vec<Sample>,
}

impl Recorder {
    pub fn new(phases: Phases) -> Recorder {
        Recorder {
            phases,
            overall: histogram(3),
            by_kind: Kind::ALL.iter().map(|_| histogram(3)).collect(),
            per_second: Vec::new(),
            per_turn: Vec::new(),
            lag: histogram(3),
            sent: [0; 7],
            answered: 0,
            decisions: Default::default(),
            errors: BTreeMap::new(),
            too_early: 0,
            samples: Vec::new(),
        }
    }

    /// Records one answered measured request: latency from `due` to `done`, lag from `due` to
    /// `sent`.
    pub fn latency(&mut self, kind: Kind, due: Instant, sent: Instant, done: Instant) {
        let us = micros(due, done).min(MAX_US);
        self.overall.saturating_record(us);
        self.by_kind[kind.index()].saturating_record(us);
        let sec = self.phases.second_of(due);
        grown(&mut self.per_second, sec + 1, 2)[sec].saturating_record(us);
        if let Some(turn) = self.phases.turn_of(due) {
            grown(&mut self.per_turn, turn + 1, 3)[turn].saturating_record(us);
        }
        self.lag.saturating_record(micros(due, sent).min(MAX_US));
    }

    pub fn decision(&mut self, kind: Kind, decision: &str) {
        *self.decisions[kind.index()]
            .entry(decision.to_owned())
            .or_default() += 1;
    }

    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Keeps `p` and its answer as an example of `error` (the first few only).
    pub fn sample(&mut self, error: &str, p: &Planned, answer: Option<&Answer>) {
        if self.samples.len() < SAMPLES {
            self.samples.push(Sample {
                error: error.to_owned(),
                kind: p.kind.name().to_owned(),
                path: p.path.to_owned(),
                idempotency_key: p.key.clone(),
                status: answer.map(|a| a.status),
                answer: answer.map(|a| text(&a.body)),
                expected: p.expected.as_deref().map(text),
            });
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn overall(&self) -> &Histogram<u64> {
        &self.overall
    }

    pub fn by_kind(&self, kind: Kind) -> &Histogram<u64> {
        &self.by_kind[kind.index()]
    }

    pub fn lag(&self) -> &Histogram<u64> {
        &self.lag
    }

    pub fn per_second(&self) -> &[Histogram<u64>] {
        &self.per_second
    }

    pub fn per_turn(&self) -> &[Histogram<u64>] {
        &self.per_turn
    }

    /// Decisions of all kinds together.
    pub fn all_decisions(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for m in &self.decisions {
            for (d, n) in m {
                *all.entry(d.clone()).or_default() += n;
            }
        }
        all
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.overall.add(&other.overall);
        for (a, b) in self.by_kind.iter_mut().zip(&other.by_kind) {
            let _ = a.add(b);
        }
        for (a, b) in grown(&mut self.per_second, other.per_second.len(), 2)
            .iter_mut()
            .zip(&other.per_second)
        {
            let _ = a.add(b);
        }
        for (a, b) in grown(&mut self.per_turn, other.per_turn.len(), 3)
            .iter_mut()
            .zip(&other.per_turn)
        {
            let _ = a.add(b);
        }
        let _ = self.lag.add(&other.lag);
        for (a, b) in self.sent.iter_mut().zip(other.sent) {
            *a += b;
        }
        self.answered += other.answered;
        for (a, b) in self.decisions.iter_mut().zip(&other.decisions) {
            for (d, n) in b {
                *a.entry(d.clone()).or_default() += n;
            }
        }
        for (e, n) in &other.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
        self.too_early += other.too_early;
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples
            .extend(other.samples.iter().take(room).cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn merges_everything() {
        let phases = Phases {
            start: Instant::now(),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(10),
            turns: None,
        };
        let t0 = phases.start;
        let mut a = Recorder::new(phases);
        let mut b = Recorder::new(phases);
        a.latency(Kind::Purchase, t0, t0, t0 + Duration::from_millis(2));
        b.latency(
            Kind::Refund,
            t0 + Duration::from_secs(3),
            t0 + Duration::from_secs(3),
            t0 + Duration::from_millis(3005),
        );
        a.decision(Kind::Purchase, "APPROVED");
        b.decision(Kind::Purchase, "APPROVED");
        b.decision(Kind::Refund, "APPROVED");
        b.error("timeout");
        let p = crate::traffic::Planned {
            kind: Kind::Duplicate,
            account: 1,
            path: "/transactions/authorizations/debit",
            key: "k-1".into(),
            body: bytes::Bytes::from_static(b"{}"),
            op: None,
            expected: Some(bytes::Bytes::from_static(b"{\"status\":\"APPROVED\"}")),
            earlier: None,
        };
        let answer = Answer {
            status: 200,
            headers: Default::default(),
            body: bytes::Bytes::from_static(b"{\"status\":\"REJECTED\"}"),
            signature_ok: true,
        };
        for _ in 0..30 {
            b.sample("duplicate_mismatch", &p, Some(&answer));
        }
        a.merge(&b);
        assert_eq!(a.samples.len(), SAMPLES, "examples are capped");
        let s = &a.samples[0];
        assert_eq!(s.idempotency_key, "k-1");
        assert_eq!(s.answer.as_deref(), Some("{\"status\":\"REJECTED\"}"));
        assert_eq!(s.expected.as_deref(), Some("{\"status\":\"APPROVED\"}"));
        assert_eq!(a.overall().len(), 2);
        assert_eq!(a.by_kind(Kind::Refund).len(), 1);
        assert_eq!(a.per_second().len(), 4);
        assert_eq!(a.per_second()[3].len(), 1);
        assert_eq!(a.all_decisions()["APPROVED"], 3);
        assert_eq!(a.error_count(), 1);
        assert!(a.overall().max() >= 4_990);
        assert!(a.per_turn().is_empty(), "no turns, no turn figures");
    }

    #[test]
    fn turns_are_recorded_apart_and_merged() {
        let phases = Phases::in_turns(20_000, 10_000, 2_000);
        let t0 = phases.start;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (mut a, mut b) = (Recorder::new(phases), Recorder::new(phases));
        a.latency(Kind::Purchase, at(1_000), at(1_000), at(1_001));
        a.latency(Kind::Purchase, at(3_000), at(3_000), at(3_002));
        b.latency(Kind::Purchase, at(13_000), at(13_000), at(13_009));
        b.latency(Kind::Purchase, at(14_000), at(14_000), at(14_009));
        a.merge(&b);
        assert_eq!(a.overall().len(), 4, "every request counts overall");
        let turns = a.per_turn();
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].len(), 1, "the skipped start is left out");
        assert_eq!(turns[1].len(), 2);
        assert!((8_990..=9_010).contains(&turns[1].value_at_quantile(0.5)));
    }
}
