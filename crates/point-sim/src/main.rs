fn main() {
    std::process::exit(point_sim::load::main_with_args(std::env::args_os()));
}
