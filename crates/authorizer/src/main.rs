use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = authorizer::cli::Cli::parse();
    let code = authorizer::cli::run(cli).await;
    std::process::exit(code);
}
