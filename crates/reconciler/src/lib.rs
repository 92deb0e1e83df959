//! The nightly reconciliation worker: fetch the processor's daily CSV files (SFTP or a
//! local directory), parse them with a configurable column mapping, match every row
//! against the ledger, record and report every break.

#[cfg(feature = "service")]
pub mod cli;
pub mod config;
pub mod parse;
#[cfg(feature = "service")]
pub mod partition;
#[cfg(feature = "service")]
pub mod report;
#[cfg(feature = "service")]
pub mod run;
pub mod schedule;
#[cfg(feature = "service")]
pub mod sftp;
