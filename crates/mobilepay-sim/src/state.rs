//! What the HTTP workers share: the world behind one mutex (never held across an await),
//! the breaks, counters and the reservation latency histogram.

use crate::channel::Answer;
use crate::model::{Call, World};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use processor_client::support::now_ms;

/// Unix time in seconds, for `X-Timestamp`.
pub fn unix_now() -> i64 {
    now_ms() / 1000
}

/// A disagreement between the simulator and the authorizer about money: a refused capture,
/// refund or cancel (or a refused reserve). Listed by `GET /sim/breaks`, never dropped.
#[derive(Debug, Clone, Serialize)]
pub struct Break {
    pub at_ms: i64,
    pub call: &'static str,
    pub payment_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    pub http_status: u16,
    pub code: String,
    pub message: String,
}

impl Break {
    pub fn from_answer(call: &Call, a: &Answer) -> Break {
        Break {
            at_ms: now_ms(),
            call: call.kind(),
            payment_id: call.payment_id().to_owned(),
            refund_id: match call {
                Call::Refund { refund_id, .. } => Some(refund_id.clone()),
                _ => None,
            },
            http_status: a.status,
            code: a.code(),
            message: a.message(),
        }
    }
}

#[derive(Default)]
pub struct Stats {
    /// Background deliveries not yet answered.
    pub pending: AtomicU64,
    pub retries: AtomicU64,
    pub redeliveries: AtomicU64,
    pub captures_delivered: AtomicU64,
    pub cancels_delivered: AtomicU64,
    pub refunds_delivered: AtomicU64,
    pub cancels_found_expired: AtomicU64,
    pub breaks: AtomicU64,
}

pub struct Shared {
    pub world: Mutex<World>,
    pub breaks: Mutex<Vec<Break>>,
    pub stats: Stats,
    /// Payments whose capture is not yet answered: their refunds wait for it.
    pub captures_in_flight: Mutex<std::collections::HashSet<String>>,
    latency_us: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Shared {
    pub fn new(world: World) -> Shared {
        Shared {
            world: Mutex::new(world),
            breaks: Mutex::new(Vec::new()),
            stats: Stats::default(),
            captures_in_flight: Mutex::default(),
            latency_us: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
            ),
        }
    }

    /// The world, even after a panic elsewhere (its state is still consistent: every
    /// operation checks before it changes anything).
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record_break(&self, b: Break) {
        self.stats.breaks.fetch_add(1, Ordering::SeqCst);
        self.breaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(b);
    }

    pub fn breaks_json(&self) -> Value {
        let list = self
            .breaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        json!({ "count": list.len(), "breaks": list })
    }

    pub fn count_delivered(&self, call: &Call) {
        let c = match call {
            Call::Capture { .. } => &self.stats.captures_delivered,
            Call::Cancel { .. } => &self.stats.cancels_delivered,
            Call::Refund { .. } => &self.stats.refunds_delivered,
            Call::Reserve(_) => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_reserve_latency(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self
            .latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(us);
    }

    /// (count, p50, p99, max) of answered reserves, in milliseconds.
    pub fn reserve_latency_ms(&self) -> (u64, f64, f64, f64) {
        let h = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (h.len(), ms(0.5), ms(0.99), h.max() as f64 / 1000.0)
    }

    pub fn stats_json(&self) -> Value {
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let (n, p50, p99, max) = self.reserve_latency_ms();
        json!({
            "pending_deliveries": g(&s.pending),
            "retries": g(&s.retries),
            "redeliveries": g(&s.redeliveries),
            "captures_delivered": g(&s.captures_delivered),
            "cancels_delivered": g(&s.cancels_delivered),
            "refunds_delivered": g(&s.refunds_delivered),
            "cancels_found_expired": g(&s.cancels_found_expired),
            "breaks": g(&s.breaks),
            "reserve_latency_ms": {"count": n, "p50": p50, "p99": p99, "max": max},
            "world": self.world().counts(),
        })
    }
}
