//! The card processor's wire protocol, as seen from the issuer side.
//!
//! This crate is pure: it parses and builds the bodies the processor exchanges with us, parses
//! amounts exactly, and signs/verifies the HMAC headers. It does no I/O, so the HTTP layer, the
//! store and the simulator can all share one definition of the protocol.
//!
//! * [`amount`]: amounts as sent on the wire (JSON number or string), parsed without `f64`.
//! * [`minor`]: integer minor units to and from plain decimal text.
//! * [`signature`]: `X-Signature` / `X-Timestamp` handling and the key ring used during rotation.
//! * [`wire`]: request, notification and response bodies.
//! * [`webhook`]: the URL challenge and the `x-signature` of webhook deliveries.

pub mod amount;
pub mod lenient;
pub mod minor;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod signature;
pub mod webhook;
pub mod wire;

pub use amount::{AmountError, WireAmount};
pub use signature::{ApiSecret, KeyRing, SignatureError};
pub use wire::{
    AdjustmentResponse, AuthorizationResponse, Direction, Notification, Status, StatusDetail,
    TransactionRequest, Verdict, WireError,
};
