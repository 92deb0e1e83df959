//! Signed-traffic load generator for the authorizer.
//!
//! Sends processor traffic signed exactly as the processor signs it (through the protocol
//! crate), at a fixed rate on a clock (open loop: latency counts from the due time, so a client
//! or server that falls behind cannot hide it) or from N back-to-back connections (closed loop:
//! the maximum). Every answer's signature and status are checked, duplicates must replay the
//! identical body, and at the end every touched account is read back and compared, to the
//! minor unit, with what the answers said.
//!
//! * [`cli`]: command line and configuration.
//! * [`mix`], [`rng`], [`traffic`]: what to send, to whom, built with the wire types.
//! * [`schedule`]: the open-loop clock.
//! * [`http`]: signed calls and verified answers.
//! * [`book`], [`money`]: expected balances in exact minor units.
//! * [`run`], [`verify`]: the run, account setup, read-back and audit.
//! * [`stats`], [`report`], [`plot`]: histograms, report.json, table and SVG plots.

pub mod book;
pub mod cli;
pub mod http;
pub mod mix;
pub mod money;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod traffic;
pub mod verify;

/// Parses the command line, runs, prints the table; the exit code is 0 when the run passed,
/// 1 when it failed a check, 2 when it could not run.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli: cli::Cli = match processor_client::support::parse_args(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cfg = match cli.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return 2;
        }
    };
    let out = cfg.out.clone();
    match run::run(cfg) {
        Ok(report) => {
            print!("{}", report::table(&report, &out));
            if report.passed { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            2
        }
    }
}
