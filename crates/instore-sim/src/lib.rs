//! `instore-sim`: the InStore side of the stored-value extension, scripted, for people
//! and tests (spec `docs/instore.md`, sections 1.2, 1.3 and 2). It signs envelopes as the
//! InStore payment extension proxy does (HMAC-SHA256 of `JSON.stringify(payload)` with the
//! tenant's verification key, the payload's bytes verbatim in the body), takes the
//! callbacks on a loopback port of its own, checks their signatures, and tells what
//! happened. A development and test tool: it listens on loopback only, keeps nothing, and
//! is never linked into `authorizer`.
//!
//! * [`config`]: the tenant and key from the authorizer's own configuration, or flags.
//! * [`sim`]: the signed requests, the callback receiver, the log's signed GET.
//! * [`story`]: the answers in words, and the demo (create, load, redeem, cancel, lookup,
//!   log, callbacks).
//! * [`cli`]: the command line.

pub mod cli;
pub mod config;
pub mod sim;
pub mod story;

pub use config::Target;
pub use sim::{Money, NewCard, Outcome, Receiver, Sim};
