//! `instore-sim`: the InStore side of the stored-value, pay-on-account and wallet
//! extensions, scripted, for people and tests (spec `instore-extensions.md`, sections 1.2,
//! 1.3, 2, 3 and 4). It signs envelopes as the InStore payment extension proxy does
//! (HMAC-SHA256 of `JSON.stringify(payload)` with the tenant's verification key, the
//! payload's bytes verbatim in the body), takes the callbacks on a loopback port of its
//! own, checks their signatures, and tells what happened. A development and test tool: it listens on loopback only, keeps nothing, and
//! is never linked into `authorizer`.
//!
//! * [`config`]: the tenant and key (and the admin token) from the authorizer's own
//!   configuration, or flags.
//! * [`sim`]: the signed requests, the callback receiver, the logs' signed GET, the admin
//!   API calls.
//! * [`story`]: the answers in words, and the demo (create, load, redeem, cancel, lookup,
//!   log, callbacks).
//! * [`poa`]: pay on account (Create, Credit, Inquiry, Update, the log; the issuer's limit,
//!   block and reversal) and its demo.
//! * [`wallet`]: barcodes from the issuer, the six wallet actions, and the demo.
//! * [`cli`]: the command line.

pub mod cli;
pub mod config;
pub mod poa;
pub mod sim;
pub mod story;
pub mod wallet;

pub use config::Target;
pub use sim::{Money, NewCard, Outcome, Receiver, Sim};
