//! The intent state machine of point-integration §1.5, as pure functions.
//!
//! Payment intents and refund intents share the states, except that a refund intent never
//! enters `PROCESSED` or `CONFIRMATION_REQUIRED`: it goes from `PROCESSING` straight to
//! `FINISHED` or `ERROR`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Open,
    OnTerminal,
    Processing,
    Processed,
    Finished,
    ConfirmationRequired,
    Canceled,
    Error,
    Abandoned,
}

impl State {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "OPEN",
            State::OnTerminal => "ON_TERMINAL",
            State::Processing => "PROCESSING",
            State::Processed => "PROCESSED",
            State::Finished => "FINISHED",
            State::ConfirmationRequired => "CONFIRMATION_REQUIRED",
            State::Canceled => "CANCELED",
            State::Error => "ERROR",
            State::Abandoned => "ABANDONED",
        }
    }

    /// Nothing leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Finished
                | State::ConfirmationRequired
                | State::Canceled
                | State::Error
                | State::Abandoned
        )
    }

    /// A device holding an intent in one of these states takes no other (`device_busy`).
    pub fn occupies_device(self) -> bool {
        matches!(
            self,
            State::Open | State::OnTerminal | State::Processing | State::Processed
        )
    }
}

/// Payment intent or refund intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Payment,
    Refund,
}

/// What happens to an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The device fetches it (green key).
    Fetch,
    /// `DELETE` through the API.
    ApiCancel,
    /// Cancelled on the device.
    DeviceCancel,
    /// A card is presented; processing with the financial institution starts.
    Present,
    /// Processing finished with a payment status (payment intents only).
    Reconciled,
    /// The transaction ends (approved or rejected: see the payment's state).
    End,
    /// A transaction error.
    Fail,
    /// Processing ended without obtaining a payment status (payment intents only).
    NoStatus,
    /// The abandonment timer fired.
    Timer,
}

/// Why an event does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `DELETE` on an intent that is not `OPEN` (409 `intent_not_cancelable` or
    /// `refund_not_cancelable`).
    NotCancelable,
    /// Any other event that does not apply to the state.
    NotAllowed,
}

/// The state an event leads to, or why it does not apply.
pub fn next(kind: Kind, from: State, event: Event) -> Result<State, Refusal> {
    use Event as E;
    use State as S;
    match (from, event) {
        (S::Open, E::Fetch) => Ok(S::OnTerminal),
        (S::Open, E::ApiCancel) => Ok(S::Canceled),
        (_, E::ApiCancel) => Err(Refusal::NotCancelable),
        (S::OnTerminal, E::DeviceCancel) => Ok(S::Canceled),
        (S::OnTerminal, E::Present) => Ok(S::Processing),
        (S::Processing, E::Reconciled) if kind == Kind::Payment => Ok(S::Processed),
        (S::Processed, E::End) if kind == Kind::Payment => Ok(S::Finished),
        (S::Processing, E::End) if kind == Kind::Refund => Ok(S::Finished),
        (S::Processing, E::Fail) => Ok(S::Error),
        (S::Processing, E::NoStatus) if kind == Kind::Payment => Ok(S::ConfirmationRequired),
        (S::Open | S::OnTerminal, E::Timer) => Ok(S::Abandoned),
        _ => Err(Refusal::NotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [State; 9] = [
        State::Open,
        State::OnTerminal,
        State::Processing,
        State::Processed,
        State::Finished,
        State::ConfirmationRequired,
        State::Canceled,
        State::Error,
        State::Abandoned,
    ];
    const ALL_EVENTS: [Event; 9] = [
        Event::Fetch,
        Event::ApiCancel,
        Event::DeviceCancel,
        Event::Present,
        Event::Reconciled,
        Event::End,
        Event::Fail,
        Event::NoStatus,
        Event::Timer,
    ];

    fn table(kind: Kind) -> Vec<(State, Event, State)> {
        use Event as E;
        use State as S;
        let mut t = vec![
            (S::Open, E::Fetch, S::OnTerminal),
            (S::Open, E::ApiCancel, S::Canceled),
            (S::OnTerminal, E::DeviceCancel, S::Canceled),
            (S::OnTerminal, E::Present, S::Processing),
            (S::Processing, E::Fail, S::Error),
            (S::Open, E::Timer, S::Abandoned),
            (S::OnTerminal, E::Timer, S::Abandoned),
        ];
        match kind {
            Kind::Payment => t.extend([
                (S::Processing, E::Reconciled, S::Processed),
                (S::Processed, E::End, S::Finished),
                (S::Processing, E::NoStatus, S::ConfirmationRequired),
            ]),
            Kind::Refund => t.push((S::Processing, E::End, S::Finished)),
        }
        t
    }

    /// Every (state, event) pair: the table's transitions apply, everything else is refused,
    /// and an API cancel outside `OPEN` is refused as not cancelable.
    #[test]
    fn every_pair_follows_the_table() {
        for kind in [Kind::Payment, Kind::Refund] {
            let t = table(kind);
            for from in ALL_STATES {
                for ev in ALL_EVENTS {
                    let got = next(kind, from, ev);
                    match t.iter().find(|(f, e, _)| *f == from && *e == ev) {
                        Some((_, _, to)) => assert_eq!(got, Ok(*to), "{kind:?} {from:?} {ev:?}"),
                        None if ev == Event::ApiCancel => {
                            assert_eq!(got, Err(Refusal::NotCancelable), "{kind:?} {from:?}")
                        }
                        None => {
                            assert_eq!(got, Err(Refusal::NotAllowed), "{kind:?} {from:?} {ev:?}")
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_leaves_a_final_state() {
        for kind in [Kind::Payment, Kind::Refund] {
            for from in ALL_STATES.into_iter().filter(|s| s.is_final()) {
                for ev in ALL_EVENTS {
                    assert!(next(kind, from, ev).is_err(), "{kind:?} {from:?} {ev:?}");
                }
            }
        }
    }

    #[test]
    fn refunds_never_enter_processed_or_confirmation_required() {
        for from in ALL_STATES {
            for ev in ALL_EVENTS {
                if let Ok(to) = next(Kind::Refund, from, ev) {
                    assert!(
                        to != State::Processed && to != State::ConfirmationRequired,
                        "{from:?} {ev:?} -> {to:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_happy_paths() {
        let mut s = State::Open;
        for ev in [Event::Fetch, Event::Present, Event::Reconciled, Event::End] {
            s = next(Kind::Payment, s, ev).unwrap();
        }
        assert_eq!(s, State::Finished);
        let mut s = State::Open;
        for ev in [Event::Fetch, Event::Present, Event::End] {
            s = next(Kind::Refund, s, ev).unwrap();
        }
        assert_eq!(s, State::Finished);
    }

    #[test]
    fn busy_and_final_sets() {
        let busy: Vec<_> = ALL_STATES
            .into_iter()
            .filter(|s| s.occupies_device())
            .collect();
        assert_eq!(
            busy,
            [
                State::Open,
                State::OnTerminal,
                State::Processing,
                State::Processed
            ]
        );
        for s in ALL_STATES {
            assert_eq!(s.is_final(), !s.occupies_device(), "{s:?}");
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
    }
}
