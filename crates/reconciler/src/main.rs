use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = reconciler::cli::Cli::parse();
    let code = reconciler::cli::main(cli).await;
    // Output that could not be written (a full disk) is no success.
    std::process::exit(if code == 0 && settings::output_failed() {
        2
    } else {
        code
    });
}
