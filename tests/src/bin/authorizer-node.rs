//! The authorizer's own command line, built inside the test package so that tests can
//! start it as a real process (and kill it) without depending on another package's binary
//! being built. Identical to `crates/authorizer/src/main.rs`.

use clap::Parser;

fn main() {
    let cli = authorizer::cli::Cli::parse();
    let code = actix_rt::System::new().block_on(authorizer::cli::run(cli));
    std::process::exit(code);
}
