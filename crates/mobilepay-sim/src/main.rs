fn main() {
    std::process::exit(mobilepay_sim::load::main_with_args(std::env::args_os()));
}
