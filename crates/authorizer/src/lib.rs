//! The issuer's authorization service: the processor's real-time endpoints, the admin
//! API, configuration and startup. `main.rs` only parses the command line.

pub mod app;
pub mod backtest;
pub mod batcher;
pub mod channel_service;
pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod fleet;
pub mod inflight;
pub mod instore_poa;
pub mod instore_service;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod ratelimit;
pub mod routes;
pub mod rules;
pub mod security;
pub mod service;
pub mod signed;
pub mod telemetry;
pub mod wallet_service;

pub use app::{AppState, Application};
pub use config::Settings;

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    store::now_ms().div_euclid(1000)
}
