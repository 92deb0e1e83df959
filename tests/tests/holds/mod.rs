//! Holds and the channel reservation API (`mobilepay-pos.md` §2.1 to §2.4): a real server on
//! both stores, driven over HTTP with requests signed with a channel's key. One module per
//! area; every scenario ends with a clean audit (the matrix does that).

pub(crate) mod common;
mod concurrency;
mod errors;
mod expiry;
mod faults;
mod killed;
mod reconciliation;
mod worked_example;
