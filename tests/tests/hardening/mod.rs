//! Hardening: each defect a hostile client found, as a regression test against a real
//! server on both stores. One module per area.

mod headers;
mod intake;
mod money;
