use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = authorizer::cli::Cli::parse();
    // An actix system: a Tokio runtime that also runs the HTTP client's local tasks.
    let code = actix_rt::System::new().block_on(authorizer::cli::run(cli));
    // Output that could not be written (a full disk) is no success.
    std::process::exit(if code == 0 && settings::output_failed() {
        2
    } else {
        code
    });
}
