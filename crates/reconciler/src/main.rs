use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = reconciler::cli::Cli::parse();
    std::process::exit(reconciler::cli::main(cli).await);
}
