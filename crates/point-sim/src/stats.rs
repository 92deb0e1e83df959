//! Counters, served at `GET /sim/stats`.

use crate::signed::{ADJ_CREDIT, AUTH_DEBIT, Answer, Failure, NOTIFY};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Stats {
    pub authorizations_sent: AtomicU64,
    pub adjustments_sent: AtomicU64,
    pub notifications_sent: AtomicU64,
    /// Answers: 2xx with a valid signature.
    pub answers_ok: AtomicU64,
    /// Answers whose signature did not verify.
    pub answers_bad_signature: AtomicU64,
    /// Non-2xx answers.
    pub answers_not_2xx: AtomicU64,
    pub timeouts: AtomicU64,
    pub unavailable: AtomicU64,
    /// Follow-ups (advices, reversals, refunds) refused with a final 4xx.
    pub followups_refused: AtomicU64,
    pub followups_pending: AtomicU64,
    pub webhooks_delivered: AtomicU64,
    pub webhook_attempts_failed: AtomicU64,
    pub webhooks_given_up: AtomicU64,
    pub dropped_unvalidated: AtomicU64,
    pub challenges_passed: AtomicU64,
    pub challenges_failed: AtomicU64,
}

#[derive(Serialize)]
pub struct Snapshot {
    pub authorizations_sent: u64,
    pub adjustments_sent: u64,
    pub notifications_sent: u64,
    pub answers_ok: u64,
    pub answers_bad_signature: u64,
    pub answers_not_2xx: u64,
    pub timeouts: u64,
    pub unavailable: u64,
    pub followups_refused: u64,
    pub followups_pending: u64,
    pub webhooks_delivered: u64,
    pub webhook_attempts_failed: u64,
    pub webhooks_given_up: u64,
    pub dropped_unvalidated: u64,
    pub challenges_passed: u64,
    pub challenges_failed: u64,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub fn count_processor(&self, path: &str, r: &Result<Answer, Failure>) {
        match path {
            AUTH_DEBIT => inc(&self.authorizations_sent),
            ADJ_CREDIT => inc(&self.adjustments_sent),
            NOTIFY => inc(&self.notifications_sent),
            _ => {}
        }
        match r {
            Ok(a) if !(200..300).contains(&a.status) => inc(&self.answers_not_2xx),
            Ok(a) if !a.signature_ok => inc(&self.answers_bad_signature),
            Ok(_) => inc(&self.answers_ok),
            Err(Failure::Timeout) => inc(&self.timeouts),
            Err(Failure::Unavailable) => inc(&self.unavailable),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            authorizations_sent: get(&self.authorizations_sent),
            adjustments_sent: get(&self.adjustments_sent),
            notifications_sent: get(&self.notifications_sent),
            answers_ok: get(&self.answers_ok),
            answers_bad_signature: get(&self.answers_bad_signature),
            answers_not_2xx: get(&self.answers_not_2xx),
            timeouts: get(&self.timeouts),
            unavailable: get(&self.unavailable),
            followups_refused: get(&self.followups_refused),
            followups_pending: get(&self.followups_pending),
            webhooks_delivered: get(&self.webhooks_delivered),
            webhook_attempts_failed: get(&self.webhook_attempts_failed),
            webhooks_given_up: get(&self.webhooks_given_up),
            dropped_unvalidated: get(&self.dropped_unvalidated),
            challenges_passed: get(&self.challenges_passed),
            challenges_failed: get(&self.challenges_failed),
        }
    }
}
