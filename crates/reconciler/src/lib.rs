//! The nightly reconciliation worker: fetch the processor's daily CSV files (SFTP or a
//! local directory), parse them with a configurable column mapping, match every row
//! against the ledger, record and report every break.

pub mod cli;
pub mod config;
pub mod parse;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sftp;
