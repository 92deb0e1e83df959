fn main() {
    std::process::exit(loadgen::main_with_args(std::env::args_os()));
}
