//! The command line and the load mode.

pub fn main_with_args(_args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    0
}
