//! The virtual card reader of instore-extensions §5 (filled in below).

#[derive(Default)]
pub struct ReaderState {}

pub fn routes(_cfg: &mut actix_web::web::ServiceConfig) {}
