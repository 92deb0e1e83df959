//! The issuer's ledger domain: currencies, exact money, identifiers, and the pure
//! authorization decision. No I/O and no async: everything here is a function of
//! its inputs, so it can be table-tested and benchmarked in isolation.

pub mod controls;
pub mod currency;
pub mod decision;
pub mod funding;
pub mod holds;
pub mod ids;
pub mod instore;
pub mod money;
pub mod plan;
pub mod posting;
pub mod reconcile;
pub mod verdicts;

pub use currency::{Currency, CurrencyError, UNLISTED_EXPONENT};
pub use decision::{
    AccountState, AuthorizationInput, CardState, CardStatus, Decision, Decline, DeclineClass,
    RequestKind, decide,
};
pub use ids::{IdError, Mcc, MccSet};
pub use money::{AmountError, format_minor, to_minor, to_minor_rounded};
pub use posting::{Leg, PostingPlan, SystemAccount};
