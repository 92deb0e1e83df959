//! The run: open and fund the accounts, send the traffic from worker threads (one actix
//! system and one HTTP client each), settle every answer, then verify the money.

use crate::book::{Book, judge};
use crate::cli::{Config, Mode};
use crate::http::{Answer, Failure, Http};
use crate::report::{self, Report, TurnCommand};
use crate::rng::Rng;
use crate::schedule::{Phases, Schedule, Slot};
use crate::stats::Recorder;
use crate::traffic::{Earlier, Past, Planned, Replayable, Traffic};
use crate::verify;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub errors: AtomicU64,
}

/// State shared by every worker.
pub struct Shared {
    pub cfg: Config,
    pub traffic: Traffic,
    pub past: Mutex<Past>,
    pub book: Book,
    pub phases: Phases,
    next_seq: AtomicU64,
    pub progress: Progress,
    /// Requests whose outcome is unknown (no answer, 5xx, 425): sent again after the run with
    /// the same key and body, so the ledger's answer tells what happened.
    pub unresolved: Mutex<Vec<Planned>>,
}

impl Shared {
    pub fn new(cfg: Config, phases: Phases) -> Shared {
        Shared {
            traffic: Traffic::new(&cfg),
            book: Book::new(cfg.accounts),
            cfg,
            past: Mutex::new(Past::default()),
            phases,
            next_seq: AtomicU64::new(0),
            progress: Progress::default(),
            unresolved: Mutex::new(Vec::new()),
        }
    }

    /// Applies an HTTP 200 answer: the balance it moved, what later requests may refer to, and
    /// any problem with it (returned as error kinds). Returns the decision label.
    pub fn settle_ok(&self, p: &Planned, body: &Bytes, errors: &mut Vec<&'static str>) -> String {
        if let Some(expected) = &p.expected {
            if body != expected {
                errors.push("duplicate_mismatch");
            }
            return label(body);
        }
        let Some(op) = p.op else {
            return label(body);
        };
        let j = judge(&op, body, self.cfg.exponent);
        self.book.apply(p.account, j.delta);
        if let Some(problem) = j.problem {
            errors.push(problem);
        }
        if j.problem.is_none() || j.problem == Some("unexpected_effect") {
            let mut past = self.past.lock().expect("past");
            if let Some(e) = &p.earlier {
                past.answered(Earlier {
                    approved: j.approved,
                    ..e.clone()
                });
            }
            if j.replayable {
                past.replayable(Replayable {
                    account: p.account,
                    path: p.path,
                    key: p.key.clone(),
                    body: p.body.clone(),
                    answer: body.clone(),
                });
            }
        }
        j.decision
    }

    fn unresolved(&self, p: Planned) {
        if p.op.is_some_and(|op| op.moves_money()) {
            self.unresolved.lock().expect("unresolved").push(p);
        }
    }
}

/// `status_detail` (authorizations, adjustments) or `effect` (notifications) of an answer.
fn label(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v.get("status_detail")
        .or_else(|| v.get("effect"))
        .and_then(|s| s.as_str())
        .unwrap_or("UNREADABLE")
        .to_owned()
}

/// One worker thread's side: its client, its random stream, its recorder.
struct Worker {
    shared: Arc<Shared>,
    http: Http,
    rng: RefCell<Rng>,
    rec: RefCell<Recorder>,
}

impl Worker {
    fn new(shared: Arc<Shared>, thread: u32, connections: usize) -> Worker {
        let c = &shared.cfg;
        let http = Http::new(
            &c.url,
            &c.api_key,
            &c.secret,
            &c.admin_token,
            connections,
            c.timeout,
        );
        Worker {
            rng: RefCell::new(Rng::stream(c.seed, u64::from(thread))),
            rec: RefCell::new(Recorder::new(shared.phases)),
            http,
            shared,
        }
    }

    /// Plans, sends and settles one request due at `due`. Returns the failure, if any.
    async fn fire(&self, due: Instant, measured: bool) -> Option<Failure> {
        let s = &self.shared;
        let seq = s.next_seq.fetch_add(1, Ordering::Relaxed);
        let planned = s.traffic.plan(&mut self.rng.borrow_mut(), seq, &s.past);
        s.book.touch(planned.account);
        s.progress.sent.fetch_add(1, Ordering::Relaxed);
        if measured {
            self.rec.borrow_mut().sent[planned.kind.index()] += 1;
        }
        let sent = Instant::now();
        let result = self
            .http
            .processor(planned.path, &planned.key, planned.body.clone())
            .await;
        let done = Instant::now();
        let failure = result.as_ref().err().copied();
        self.settle(planned, result, due, sent, done, measured);
        failure
    }

    fn settle(
        &self,
        p: Planned,
        result: Result<Answer, Failure>,
        due: Instant,
        sent: Instant,
        done: Instant,
        measured: bool,
    ) {
        let s = &self.shared;
        let mut rec = self.rec.borrow_mut();
        let mut errors: Vec<String> = Vec::new();
        let mut answer = None;
        match result {
            Err(f) => {
                errors.push(f.kind().to_owned());
                s.unresolved(p.clone());
            }
            Ok(a) => {
                s.progress.answered.fetch_add(1, Ordering::Relaxed);
                if measured {
                    rec.answered += 1;
                    rec.latency(p.kind, due, sent, done);
                }
                // A 401 is never signed (nothing about the request is trusted); every other
                // answer must be.
                if a.status != 401 && !a.signature_ok {
                    errors.push("signature".to_owned());
                }
                match a.status {
                    200 => {
                        let mut problems = Vec::new();
                        let decision = s.settle_ok(&p, &a.body, &mut problems);
                        errors.extend(problems.into_iter().map(str::to_owned));
                        if measured {
                            rec.decision(p.kind, &decision);
                        }
                    }
                    425 => {
                        rec.too_early += 1;
                        s.unresolved(p.clone());
                    }
                    status => {
                        errors.push(format!("http_{status}"));
                        if status >= 500 {
                            s.unresolved(p.clone());
                        }
                    }
                }
                answer = Some(a);
            }
        }
        for e in errors {
            rec.error(&e);
            rec.sample(&e, &p, answer.as_ref());
            s.progress.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Open loop: a dispatcher thread hands out slots on the clock, round-robin to the workers.
fn open_loop(shared: &Arc<Shared>, rate: f64, bar: &ProgressBar) -> Recorder {
    let threads = shared.cfg.threads;
    let pool = shared.cfg.pool as usize;
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for t in 0..threads {
        let (tx, mut rx) = mpsc::unbounded_channel::<Slot>();
        senders.push(tx);
        let shared = shared.clone();
        workers.push(std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let w = Rc::new(Worker::new(shared, t, pool));
                let mut set = JoinSet::new();
                while let Some(slot) = rx.recv().await {
                    let w = w.clone();
                    set.spawn_local(async move {
                        w.fire(slot.due, slot.measured).await;
                    });
                    while set.try_join_next().is_some() {}
                }
                while set.join_next().await.is_some() {}
                w.rec.replace(Recorder::new(w.shared.phases))
            })
        }));
    }
    let schedule = Schedule {
        phases: shared.phases,
        rate,
    };
    let dispatcher = std::thread::spawn(move || {
        let n = senders.len() as u64;
        schedule.dispatch(|slot| senders[(slot.index % n) as usize].send(slot).is_ok());
    });
    watch(shared, bar, &workers);
    let _ = dispatcher.join();
    collect(shared, workers)
}

/// Closed loop: `connections` tasks spread over the threads, each sending back to back.
fn closed_loop(shared: &Arc<Shared>, connections: u32, bar: &ProgressBar) -> Recorder {
    let threads = shared.cfg.threads.min(connections);
    let mut workers = Vec::new();
    for t in 0..threads {
        let mine = connections / threads + u32::from(t < connections % threads);
        let shared = shared.clone();
        workers.push(std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let phases = shared.phases;
                let w = Rc::new(Worker::new(shared, t, mine as usize));
                actix_rt::time::sleep_until(phases.start.into()).await;
                let mut set = JoinSet::new();
                for _ in 0..mine {
                    let w = w.clone();
                    set.spawn_local(async move {
                        loop {
                            let due = Instant::now();
                            if due >= phases.end() {
                                break;
                            }
                            if w.fire(due, phases.is_measured(due)).await == Some(Failure::Connect)
                            {
                                // Do not spin on a refused connection.
                                actix_rt::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    });
                }
                while set.join_next().await.is_some() {}
                w.rec.replace(Recorder::new(phases))
            })
        }));
    }
    watch(shared, bar, &workers);
    collect(shared, workers)
}

/// Updates the progress bar until every worker is done.
fn watch<T>(shared: &Shared, bar: &ProgressBar, workers: &[std::thread::JoinHandle<T>]) {
    let p = &shared.progress;
    while !workers.iter().all(|w| w.is_finished()) {
        let elapsed = shared.phases.start.elapsed().as_millis() as u64;
        bar.set_position(elapsed.min(bar.length().unwrap_or(0)));
        let sent = p.sent.load(Ordering::Relaxed);
        let answered = p.answered.load(Ordering::Relaxed);
        let phase = if Instant::now() < shared.phases.measure_start() {
            "warm-up"
        } else if Instant::now() < shared.phases.end() {
            "measuring"
        } else {
            "draining"
        };
        bar.set_message(format!(
            "{phase}: sent {sent}, answered {answered}, errors {}",
            p.errors.load(Ordering::Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn collect(shared: &Shared, workers: Vec<std::thread::JoinHandle<Recorder>>) -> Recorder {
    let mut all = Recorder::new(shared.phases);
    for w in workers {
        match w.join() {
            Ok(r) => all.merge(&r),
            Err(_) => all.error("worker_panicked"),
        }
    }
    all
}

fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b
}

/// Runs `command` (with sh -c, the turn's number appended) at the start of each turn of
/// `phases`, one after the other, on a thread of its own; what each did, in turn order.
fn turn_commands(phases: Phases, command: String) -> std::thread::JoinHandle<Vec<TurnCommand>> {
    std::thread::spawn(move || {
        phases
            .turn_starts()
            .into_iter()
            .enumerate()
            .map(|(turn, start)| {
                std::thread::sleep(start.saturating_duration_since(Instant::now()));
                let began = Instant::now();
                let ok = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!("{command} {turn}"))
                    .stdin(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                TurnCommand {
                    ms: began.elapsed().as_millis() as u64,
                    ok,
                }
            })
            .collect()
    })
}

/// Runs everything; returns the report (whose `passed` decides the exit code).
pub fn run(cfg: Config) -> anyhow::Result<Report> {
    let system = actix_rt::System::new();
    let setup_http = {
        let c = &cfg;
        system.block_on(async {
            Http::new(
                &c.url,
                &c.api_key,
                &c.secret,
                &c.admin_token,
                c.setup_concurrency,
                c.timeout,
            )
        })
    };
    // The clock starts once the accounts are ready; until then the phases are provisional.
    let cut = cfg.turns.as_ref().map(|t| t.cut);
    let provisional = Phases {
        start: Instant::now(),
        warmup: cfg.warmup,
        duration: cfg.duration,
        turns: cut,
    };
    let mut shared = Shared::new(cfg, provisional);

    eprintln!(
        "opening and funding {} accounts {}-0..{} in {}",
        shared.cfg.accounts,
        shared.traffic.prefix,
        shared.cfg.accounts - 1,
        shared.cfg.currency
    );
    let b = bar(
        u64::from(shared.cfg.accounts),
        "{elapsed_precise} [{bar:30}] {pos}/{len} accounts {msg}",
    );
    system.block_on(verify::open_accounts(&shared, &setup_http, &b))?;
    b.finish_and_clear();

    shared.phases = Phases {
        start: Instant::now() + Duration::from_millis(100),
        warmup: shared.cfg.warmup,
        duration: shared.cfg.duration,
        turns: cut,
    };
    let shared = Arc::new(shared);
    let turns = shared
        .cfg
        .turns
        .as_ref()
        .map(|t| turn_commands(shared.phases, t.command.clone()));
    let total_ms = (shared.cfg.warmup + shared.cfg.duration).as_millis() as u64;
    let b = bar(total_ms, "{elapsed_precise} [{bar:30}] {msg}");
    let mut rec = match shared.cfg.mode {
        Mode::Open { rate } => {
            eprintln!(
                "open loop at {rate}/s for {:?} after {:?} of warm-up ({} threads)",
                shared.cfg.duration, shared.cfg.warmup, shared.cfg.threads
            );
            open_loop(&shared, rate, &b)
        }
        Mode::Closed { connections } => {
            eprintln!(
                "closed loop with {connections} connections for {:?} after {:?} of warm-up",
                shared.cfg.duration, shared.cfg.warmup
            );
            closed_loop(&shared, connections, &b)
        }
    };
    b.finish_and_clear();
    let total_sent = shared.progress.sent.load(Ordering::Relaxed);
    let commands = match turns.map(std::thread::JoinHandle::join) {
        Some(Ok(commands)) => commands,
        Some(Err(_)) => {
            rec.error("turn_commands_panicked");
            Vec::new()
        }
        None => Vec::new(),
    };

    let pending = std::mem::take(&mut *shared.unresolved.lock().expect("unresolved"));
    let unresolved = system.block_on(verify::resolve(&shared, &setup_http, pending, &mut rec));
    let touched = shared.book.touched();
    eprintln!("reading back {} touched accounts", touched.len());
    let b = bar(
        touched.len() as u64,
        "{elapsed_precise} [{bar:30}] {pos}/{len} accounts read back",
    );
    let money = system.block_on(verify::read_back(&shared, &setup_http, &touched, &b));
    b.finish_and_clear();
    let money = verify::Money {
        unresolved,
        ..money?
    };
    let audit = shared.cfg.audit_cmd.as_deref().map(verify::audit);

    let report = report::build(
        &shared.cfg,
        shared.phases,
        &rec,
        total_sent,
        money,
        audit,
        &commands,
    );
    report::write(&report, &rec, &shared.cfg.out)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{Phases, label, turn_commands};
    use crate::schedule::TurnCut;
    use std::time::{Duration, Instant};

    #[test]
    fn each_turn_runs_its_command_on_time_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("turns.log");
        let phases = Phases {
            start: Instant::now(),
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(250),
            turns: Some(TurnCut {
                every: Duration::from_millis(100),
                skip: Duration::from_millis(50),
            }),
        };
        // Turn 1's command fails; the others append their number.
        let cmd = format!(
            "f() {{ [ \"$1\" != 1 ] && echo \"$1\" >> {}; }}; f",
            log.display()
        );
        let done = turn_commands(phases, cmd).join().unwrap();
        assert_eq!(
            done.iter().map(|c| c.ok).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "0\n2\n");
        assert!(
            phases.start.elapsed() >= Duration::from_millis(250),
            "the last turn starts 200 ms into the measured window"
        );
    }

    #[test]
    fn labels_answers() {
        assert_eq!(
            label(br#"{"status":"REJECTED","status_detail":"INSUFFICIENT_FUNDS"}"#),
            "INSUFFICIENT_FUNDS"
        );
        assert_eq!(
            label(br#"{"message":"Notification stored","effect":"NOOP"}"#),
            "NOOP"
        );
        assert_eq!(label(b"nope"), "UNREADABLE");
    }
}
