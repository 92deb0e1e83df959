fn main() {
    std::process::exit(instore_sim::cli::main_with_args(std::env::args_os()));
}
