//! The open-loop clock: request `i` is due at `start + i / rate`, whatever happened to the
//! requests before it. Latency is measured from that due time, so when the client or the
//! server falls behind, the wait counts (no coordinated omission).

use std::time::{Duration, Instant};

/// One request's place in the run.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Sequence number in the run.
    pub index: u64,
    /// When the request is (or was) due: latency is measured from here.
    pub due: Instant,
    /// Whether it falls in the measured window (not warm-up).
    pub measured: bool,
}

/// Phases of a run on the clock: warm-up from `start`, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub start: Instant,
    pub warmup: Duration,
    pub duration: Duration,
    /// The measured window in turns (`--turn`), if it is cut.
    pub turns: Option<TurnCut>,
}

/// How the measured window is cut into turns: each lasts `every`, and its figures leave out
/// its first `skip` (while the change made at its start takes hold).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnCut {
    pub every: Duration,
    pub skip: Duration,
}

impl Phases {
    pub fn measure_start(&self) -> Instant {
        self.start + self.warmup
    }

    pub fn end(&self) -> Instant {
        self.start + self.warmup + self.duration
    }

    /// Whether a request due (or started, in a closed loop) at `t` is recorded.
    pub fn is_measured(&self, t: Instant) -> bool {
        t >= self.measure_start() && t < self.end()
    }

    /// Whole seconds since the measured window opened (for the latency-over-time series).
    pub fn second_of(&self, t: Instant) -> usize {
        t.saturating_duration_since(self.measure_start()).as_secs() as usize
    }

    /// The turn whose figures a request due at `t` counts in: none without turns, in the
    /// warm-up, after the window, or in the skipped start of a turn.
    pub fn turn_of(&self, t: Instant) -> Option<usize> {
        let cut = self.turns?;
        if !self.is_measured(t) {
            return None;
        }
        let since = t.duration_since(self.measure_start()).as_nanos();
        let every = cut.every.as_nanos().max(1);
        let into = since % every;
        (into >= cut.skip.as_nanos()).then_some((since / every) as usize)
    }

    /// A window of `duration_ms` from now, without warm-up, in turns of `every_ms` whose
    /// first `skip_ms` are left out.
    #[cfg(test)]
    pub fn in_turns(duration_ms: u64, every_ms: u64, skip_ms: u64) -> Phases {
        Phases {
            start: Instant::now(),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(duration_ms),
            turns: Some(TurnCut {
                every: Duration::from_millis(every_ms),
                skip: Duration::from_millis(skip_ms),
            }),
        }
    }

    /// When each turn starts (the last may be cut short by the window's end).
    pub fn turn_starts(&self) -> Vec<Instant> {
        let Some(cut) = self.turns.filter(|c| !c.every.is_zero()) else {
            return Vec::new();
        };
        let mut starts = Vec::new();
        let mut at = self.measure_start();
        while at < self.end() {
            starts.push(at);
            at += cut.every;
        }
        starts
    }
}

/// A fixed-rate schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub phases: Phases,
    /// Requests per second, positive.
    pub rate: f64,
}

impl Schedule {
    /// Due time of request `i`; computed from `i` (not by adding intervals), so it never drifts.
    pub fn due(&self, i: u64) -> Instant {
        self.phases.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Number of requests due before the end of the run.
    pub fn total(&self) -> u64 {
        let secs = (self.phases.warmup + self.phases.duration).as_secs_f64();
        (secs * self.rate).ceil() as u64
    }

    pub fn slot(&self, i: u64) -> Slot {
        let due = self.due(i);
        Slot {
            index: i,
            due,
            measured: self.phases.is_measured(due),
        }
    }

    /// Hands every slot to `emit` at its due time, sleeping in between (a thread sleep wakes
    /// within tens of microseconds; a runtime timer only to the millisecond). When the caller
    /// falls behind, the late slots go out at once, still carrying their original due time.
    /// Stops early when `emit` returns `false`.
    pub fn dispatch(&self, mut emit: impl FnMut(Slot) -> bool) {
        for i in 0..self.total() {
            let slot = self.slot(i);
            let now = Instant::now();
            if slot.due > now {
                std::thread::sleep(slot.due - now);
            }
            if !emit(slot) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Recorder;
    use std::sync::mpsc;

    fn schedule(rate: f64, warmup_ms: u64, duration_ms: u64) -> Schedule {
        Schedule {
            phases: Phases {
                start: Instant::now() + Duration::from_millis(5),
                warmup: Duration::from_millis(warmup_ms),
                duration: Duration::from_millis(duration_ms),
                turns: None,
            },
            rate,
        }
    }

    #[test]
    fn due_times_follow_the_rate_without_drift() {
        let s = schedule(500.0, 1000, 2000);
        assert_eq!(s.total(), 1500);
        assert_eq!(s.due(0), s.phases.start);
        assert_eq!(s.due(500) - s.phases.start, Duration::from_secs(1));
        assert_eq!(
            s.due(1499) - s.phases.start,
            Duration::from_micros(2_998_000)
        );
        assert!(!s.slot(499).measured, "warm-up is not recorded");
        assert!(s.slot(500).measured);
        assert!(s.slot(1499).measured);
    }

    /// A worker that stalls for 100 ms (a slow answer, a GC-like pause, a busy CPU) while
    /// requests keep coming due: the requests queued behind the stall must show the wait, even
    /// though each of them was quick once sent.
    #[test]
    fn a_stall_shows_up_in_the_recorded_latencies() {
        let s = schedule(1000.0, 0, 400);
        let (tx, rx) = mpsc::channel::<Slot>();
        let dispatcher = std::thread::spawn(move || s.dispatch(|slot| tx.send(slot).is_ok()));
        let mut rec = Recorder::new(s.phases);
        let mut from_send = Recorder::new(s.phases);
        for slot in rx {
            let sent = Instant::now();
            if slot.index == 100 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let done = Instant::now();
            rec.latency(crate::mix::Kind::Purchase, slot.due, sent, done);
            // What a tool timing from the actual send would have seen.
            from_send.latency(crate::mix::Kind::Purchase, sent, sent, done);
        }
        dispatcher.join().unwrap();
        let h = rec.overall();
        assert_eq!(h.len(), 400, "every slot went out");
        // About 100 requests came due during the stall; they waited 0 to 100 ms.
        let slow = h.count_between(20_000, u64::MAX);
        assert!(slow >= 50, "only {slow} requests show the stall");
        assert!(h.max() >= 90_000, "max {} us", h.max());
        // Timing from the send hides it: a single slow request.
        let hidden = from_send.overall().count_between(20_000, u64::MAX);
        assert!(hidden <= 2, "{hidden}");
        assert!(
            rec.lag().max() >= 50_000,
            "the dispatch lag records the stall too"
        );
    }

    #[test]
    fn turns_cut_the_measured_window_and_skip_their_start() {
        let mut s = schedule(100.0, 1000, 25_000);
        assert_eq!(s.phases.turn_of(s.due(200)), None, "no turns, no turn");
        s.phases.turns = Some(TurnCut {
            every: Duration::from_secs(10),
            skip: Duration::from_secs(2),
        });
        let m = s.phases.measure_start();
        let at = |ms: u64| s.phases.turn_of(m + Duration::from_millis(ms));
        assert_eq!(s.phases.turn_of(s.due(50)), None, "warm-up");
        assert_eq!(at(0), None, "a turn's start is skipped");
        assert_eq!(at(1_999), None);
        assert_eq!(at(2_000), Some(0));
        assert_eq!(at(9_999), Some(0));
        assert_eq!(at(10_500), None);
        assert_eq!(at(12_000), Some(1));
        assert_eq!(at(24_999), Some(2), "the last turn is cut short");
        assert_eq!(at(25_000), None, "after the window");
        let starts = s.phases.turn_starts();
        assert_eq!(starts.len(), 3);
        assert_eq!(starts[2] - m, Duration::from_secs(20));
    }

    #[test]
    fn the_dispatcher_keeps_the_rate() {
        let s = schedule(2000.0, 0, 250);
        let started = Instant::now();
        let mut n = 0;
        s.dispatch(|_| {
            n += 1;
            true
        });
        let took = started.elapsed();
        assert_eq!(n, 500);
        assert!(took >= Duration::from_millis(245), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
    }
}
