fn main() {
    std::process::exit(chaos::main_with_args(std::env::args_os()));
}
