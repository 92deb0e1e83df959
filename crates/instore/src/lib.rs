//! The commercetools InStore payment extensions on the wire (`docs/instore.md`): the
//! syntactic JSON layer and `JS(v)`, the signature verifier with its candidate messages, the
//! tenant configuration, request shapes and typed payloads, the result and callback bodies,
//! exact money parsing, and the pure decision tables. No I/O and no async: the routes, the
//! store and the callback outbox build on these functions.

pub mod body;
pub mod decision;
pub mod error;
pub mod json;
pub mod money;
pub mod payload;
pub mod route;
pub mod signature;
pub mod tenant;
pub mod verify;

pub use decision::{Outcome, Reason};
pub use error::{ErrorCode, InstoreError};
pub use json::{JsonError, Node, Value, js, parse};
pub use money::{Amount, MoneyError, WireAmount};
pub use route::{Method, Route, WalletAction};
pub use tenant::{SecretString, StoreFacts, Tenant, TenantConfig, TenantConfigError, Tenants};
pub use verify::{
    AuthFailure, Envelope, Headers, MatchedForm, Rejection, Shape, VerifiedGet, VerifiedPost,
    detect_shape, money_idempotency_key, verify_get, verify_post,
};
