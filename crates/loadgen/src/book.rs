//! Expected balances: what every answer says happened to the cardholder's money, kept per
//! account so the run can read each account back and compare to the minor unit.

use crate::money::parse_minor;
use protocol::wire::{AdjustmentResponse, AuthorizationResponse, Status, StatusDetail};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// What a request may do to the cardholder's balance (amounts in minor units, positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// An authorization that takes `amount` when approved (purchase, withdrawal).
    Debit { amount: i64 },
    /// A balance inquiry: moves nothing.
    Balance,
    /// An adjustment: always booked, `credit` or debit.
    Adjust { amount: i64, credit: bool },
    /// An advice about an earlier debit authorization of `amount` that we saw answered
    /// (`original_approved`), carrying the processor's verdict (`approve`).
    Advice {
        amount: i64,
        approve: bool,
        original_approved: bool,
    },
}

impl Op {
    /// Whether the answer to this request moves money (so an unknown outcome must be resolved).
    pub fn moves_money(&self) -> bool {
        !matches!(self, Op::Balance)
    }

    /// The notification effect the authorizer must report for an advice (protocol section 7):
    /// a rejected verdict reverses what we approved, an approved verdict books what we declined,
    /// everything else moves nothing.
    pub fn expected_effect(&self) -> Option<&'static str> {
        match *self {
            Op::Advice {
                approve,
                original_approved,
                ..
            } => Some(match (approve, original_approved) {
                (false, true) => "REVERSED",
                (true, false) => "FORCED",
                _ => "NOOP",
            }),
            _ => None,
        }
    }
}

/// What an HTTP 200 answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// Signed change of the cardholder's available balance, in minor units.
    pub delta: i64,
    /// `APPROVED`, `INSUFFICIENT_FUNDS`, ... for authorizations and adjustments; the reported
    /// effect (`REVERSED`, `FORCED`, `NOOP`, ...) for notifications.
    pub decision: String,
    /// Whether the answer is an authorization that was approved (and booked, for debits).
    pub approved: bool,
    /// Whether the authorizer stores this answer for replay (a `SYSTEM_ERROR` is not stored).
    pub replayable: bool,
    /// Something wrong with the answer itself, as an error kind.
    pub problem: Option<&'static str>,
}

impl Judged {
    fn problem(decision: &str, problem: &'static str) -> Judged {
        Judged {
            delta: 0,
            decision: decision.to_owned(),
            approved: false,
            replayable: false,
            problem: Some(problem),
        }
    }
}

/// Reads the body of an HTTP 200 answer to `op` and says what it did to the balance.
///
/// `exponent` is the account currency's number of decimals (for the balance an inquiry reports).
pub fn judge(op: &Op, body: &[u8], exponent: u8) -> Judged {
    match *op {
        Op::Debit { .. } | Op::Balance => {
            let Ok(r) = serde_json::from_slice::<AuthorizationResponse>(body) else {
                return Judged::problem("UNREADABLE", "unreadable_answer");
            };
            let approved =
                r.status == Status::Approved && r.status_detail == StatusDetail::Approved;
            let mut problem = None;
            if r.status == Status::Approved && r.status_detail != StatusDetail::Approved {
                problem = Some("inconsistent_status");
            }
            let delta = match *op {
                Op::Debit { amount } if approved => -amount,
                _ => 0,
            };
            if matches!(op, Op::Balance) && approved {
                let ok = r
                    .balance
                    .as_ref()
                    .is_some_and(|b| parse_minor(&b.total, exponent).is_ok());
                if !ok {
                    problem = Some("bad_balance");
                }
            }
            Judged {
                delta,
                decision: r.status_detail.as_str().to_owned(),
                approved,
                replayable: r.status_detail != StatusDetail::SystemError,
                problem,
            }
        }
        Op::Adjust { amount, credit } => {
            let Ok(r) = serde_json::from_slice::<AdjustmentResponse>(body) else {
                return Judged::problem("UNREADABLE", "unreadable_answer");
            };
            let booked = r.status_detail == StatusDetail::Approved;
            // Our adjustments name open accounts and earlier approved purchases: a flag saying
            // otherwise means the authorizer lost track of something.
            let problem = if !booked {
                Some("adjustment_not_booked")
            } else if r.message.contains("SUSPENSE") {
                Some("adjustment_on_suspense")
            } else if r.message.contains("UNKNOWN_ORIGINAL") {
                Some("adjustment_unknown_original")
            } else {
                None
            };
            let on_account = booked && !r.message.contains("SUSPENSE");
            Judged {
                delta: match (on_account, credit) {
                    (false, _) => 0,
                    (true, true) => amount,
                    (true, false) => -amount,
                },
                decision: r.status_detail.as_str().to_owned(),
                approved: booked,
                replayable: true,
                problem,
            }
        }
        Op::Advice { amount, .. } => {
            let effect = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("effect")?.as_str().map(str::to_owned));
            let Some(effect) = effect else {
                return Judged::problem("UNREADABLE", "unreadable_answer");
            };
            // The advices are about debits: a reversal gives the money back, a forced booking
            // takes it.
            let delta = match effect.as_str() {
                "REVERSED" => amount,
                "FORCED" => -amount,
                _ => 0,
            };
            let problem =
                (op.expected_effect() != Some(effect.as_str())).then_some("unexpected_effect");
            Judged {
                delta,
                decision: effect,
                approved: false,
                replayable: true,
                problem,
            }
        }
    }
}

/// Expected available balance of every account: what funding left (read from the funding
/// answer) plus every movement the answers reported since.
#[derive(Debug)]
pub struct Book {
    baseline: Vec<AtomicI64>,
    delta: Vec<AtomicI64>,
    touched: Vec<AtomicBool>,
}

impl Book {
    pub fn new(accounts: u32) -> Book {
        let n = accounts as usize;
        Book {
            baseline: (0..n).map(|_| AtomicI64::new(0)).collect(),
            delta: (0..n).map(|_| AtomicI64::new(0)).collect(),
            touched: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The balance the account had once funded, before any traffic.
    pub fn set_baseline(&self, account: u32, minor: i64) {
        self.baseline[account as usize].store(minor, Ordering::Relaxed);
    }

    /// A request was sent for the account: it will be read back at the end.
    pub fn touch(&self, account: u32) {
        self.touched[account as usize].store(true, Ordering::Relaxed);
    }

    /// An answer moved `delta` minor units on the account.
    pub fn apply(&self, account: u32, delta: i64) {
        self.touch(account);
        if delta != 0 {
            self.delta[account as usize].fetch_add(delta, Ordering::Relaxed);
        }
    }

    pub fn expected(&self, account: u32) -> i64 {
        let i = account as usize;
        self.baseline[i].load(Ordering::Relaxed) + self.delta[i].load(Ordering::Relaxed)
    }

    /// Accounts that received at least one request, in index order.
    pub fn touched(&self) -> Vec<u32> {
        self.touched
            .iter()
            .enumerate()
            .filter(|(_, t)| t.load(Ordering::Relaxed))
            .map(|(i, _)| i as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPROVED: &[u8] =
        br#"{"status":"APPROVED","status_detail":"APPROVED","message":"Approved"}"#;
    const NO_FUNDS: &[u8] =
        br#"{"status":"REJECTED","status_detail":"INSUFFICIENT_FUNDS","message":"Insufficient funds"}"#;
    const SYSTEM_ERROR: &[u8] =
        br#"{"status":"REJECTED","status_detail":"SYSTEM_ERROR","message":"System error"}"#;
    const BOOKED: &[u8] = br#"{"status_detail":"APPROVED","message":"Adjustment booked"}"#;

    fn advice(effect: &str) -> Vec<u8> {
        format!(r#"{{"message":"Notification stored","effect":"{effect}"}}"#).into_bytes()
    }

    #[test]
    fn approved_purchase_debits_declined_does_not() {
        let op = Op::Debit { amount: 12_550 };
        let j = judge(&op, APPROVED, 2);
        assert_eq!(
            (j.delta, j.decision.as_str(), j.approved),
            (-12_550, "APPROVED", true)
        );
        assert_eq!(j.problem, None);
        let j = judge(&op, NO_FUNDS, 2);
        assert_eq!(
            (j.delta, j.decision.as_str(), j.approved),
            (0, "INSUFFICIENT_FUNDS", false)
        );
        assert!(j.replayable);
        let j = judge(&op, SYSTEM_ERROR, 2);
        assert_eq!(j.delta, 0);
        assert!(
            !j.replayable,
            "a SYSTEM_ERROR answer is not stored for replay"
        );
        assert_eq!(judge(&op, b"<html>", 2).problem, Some("unreadable_answer"));
    }

    #[test]
    fn balance_inquiry_moves_nothing_and_reports_an_exact_balance() {
        let ok = br#"{"status":"APPROVED","status_detail":"APPROVED","message":"Balance","balance":{"total":"982345.12","currency":"ARS"}}"#;
        let j = judge(&Op::Balance, ok, 2);
        assert_eq!((j.delta, j.problem), (0, None));
        let inexact = br#"{"status":"APPROVED","status_detail":"APPROVED","message":"Balance","balance":{"total":"1.234","currency":"ARS"}}"#;
        assert_eq!(judge(&Op::Balance, inexact, 2).problem, Some("bad_balance"));
        assert_eq!(
            judge(&Op::Balance, APPROVED, 2).problem,
            Some("bad_balance")
        );
    }

    #[test]
    fn adjustments_always_book_by_route() {
        let refund = Op::Adjust {
            amount: 500,
            credit: true,
        };
        assert_eq!(judge(&refund, BOOKED, 2).delta, 500);
        let closing = Op::Adjust {
            amount: 75,
            credit: false,
        };
        assert_eq!(judge(&closing, BOOKED, 2).delta, -75);
        // A negative balance is flagged but booked.
        let flagged = br#"{"status_detail":"APPROVED","message":"Adjustment booked; flagged for review: NEGATIVE_BALANCE"}"#;
        let j = judge(&closing, flagged, 2);
        assert_eq!((j.delta, j.problem), (-75, None));
        let suspense = br#"{"status_detail":"APPROVED","message":"Adjustment booked; flagged for review: SUSPENSE"}"#;
        let j = judge(&refund, suspense, 2);
        assert_eq!((j.delta, j.problem), (0, Some("adjustment_on_suspense")));
        let refused = br#"{"status_detail":"INVALID_AMOUNT","message":"Adjustment recorded, amount not bookable"}"#;
        assert_eq!(
            judge(&refund, refused, 2).problem,
            Some("adjustment_not_booked")
        );
    }

    #[test]
    fn advices_reverse_approved_and_force_declined() {
        let reversal = Op::Advice {
            amount: 1000,
            approve: false,
            original_approved: true,
        };
        let j = judge(&reversal, &advice("REVERSED"), 2);
        assert_eq!(
            (j.delta, j.decision.as_str(), j.problem),
            (1000, "REVERSED", None)
        );
        let forced = Op::Advice {
            amount: 1000,
            approve: true,
            original_approved: false,
        };
        let j = judge(&forced, &advice("FORCED"), 2);
        assert_eq!((j.delta, j.problem), (-1000, None));
        let confirm = Op::Advice {
            amount: 1000,
            approve: true,
            original_approved: true,
        };
        assert_eq!(judge(&confirm, &advice("NOOP"), 2).delta, 0);
        let echo = Op::Advice {
            amount: 1000,
            approve: false,
            original_approved: false,
        };
        assert_eq!(judge(&echo, &advice("NOOP"), 2).problem, None);
        // The book follows what the authorizer said it did, and the surprise is reported.
        let j = judge(&reversal, &advice("NOOP"), 2);
        assert_eq!((j.delta, j.problem), (0, Some("unexpected_effect")));
    }

    #[test]
    fn book_tracks_funding_and_every_answer() {
        let book = Book::new(3);
        for a in 0..3 {
            book.set_baseline(a, 10_000_000);
        }
        // Account 0: purchase approved, purchase declined, partial refund, then the approved
        // purchase is rejected by the processor (reversed).
        let purchase = Op::Debit { amount: 12_550 };
        book.apply(0, judge(&purchase, APPROVED, 2).delta);
        book.apply(
            0,
            judge(&Op::Debit { amount: 99_999_999 }, NO_FUNDS, 2).delta,
        );
        book.apply(
            0,
            judge(
                &Op::Adjust {
                    amount: 2_550,
                    credit: true,
                },
                BOOKED,
                2,
            )
            .delta,
        );
        let reversal = Op::Advice {
            amount: 12_550,
            approve: false,
            original_approved: true,
        };
        book.apply(0, judge(&reversal, &advice("REVERSED"), 2).delta);
        assert_eq!(book.expected(0), 10_000_000 - 12_550 + 2_550 + 12_550);
        // Account 2: only a balance inquiry.
        book.touch(2);
        assert_eq!(book.expected(2), 10_000_000);
        assert_eq!(book.touched(), vec![0, 2]);
        assert_eq!(book.expected(1), 10_000_000);
    }
}
