//! The end-to-end scenarios, one module a file (a directory for the larger areas), gathered
//! in one test binary so that the authorizer and its dependencies are linked once. A test is
//! named by its module path: `scripts/test -p e2e --test scenarios flows::` runs one file,
//! `... --test scenarios holds::expiry::` one area, a full path one test.

mod attacks;
mod bad_input;
mod batches;
mod controls;
mod events;
mod exactly_once;
mod faults;
mod fleet;
mod flows;
mod hardening;
mod holds;
mod instore;
mod instore_audit;
mod instore_callbacks;
mod instore_killed;
mod instore_poa;
mod instore_sim;
mod instore_wallet;
mod mobilepay;
mod openapi;
mod point;
mod reconciliation;
mod support;
mod transport;
mod webhooks;
mod writer;
