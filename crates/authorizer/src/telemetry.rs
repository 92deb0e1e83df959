//! Logs: human-readable text on a terminal, JSON in production. `RUST_LOG` overrides the
//! configured filter.
//!
//! A malformed HTTP request (garbage bytes, a bad request line or header) is answered 400 by
//! actix-http, which also logs it at ERROR. Anyone who can connect can produce that, so it
//! would be an operator's false alarm: such events are counted
//! (`authorizer_malformed_http_total`) and logged at debug instead, under any filter that
//! lets actix-http's errors through (the default, and any filter naming a level, such as
//! `warn` or `info,sqlx=warn`). actix-http's other errors keep their level.

use crate::config::{LogFormat, LogSettings};
use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where actix-http logs a connection's parse error, and how its message starts.
const DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";
const PARSE_ERROR: &str = "request parse error";

/// Malformed HTTP requests seen by this process (its one server).
static MALFORMED_HTTP: AtomicU64 = AtomicU64::new(0);

/// How many malformed HTTP requests this process has refused.
pub fn malformed_http_requests() -> u64 {
    MALFORMED_HTTP.load(Ordering::Relaxed)
}

pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal: a log piped to a file or a collector
        // carries none of their escape codes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(MalformedHttp)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .finish()
            .with(MalformedHttp)
            .try_init(),
    };
}

/// Drops actix-http's ERROR event for a malformed request, counts it, and logs it again at
/// debug under this crate's target.
struct MalformedHttp;

impl<S: Subscriber> Layer<S> for MalformedHttp {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || meta.target() != DISPATCHER_TARGET {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let Some(at) = message.0.find(PARSE_ERROR) else {
            return true;
        };
        MALFORMED_HTTP.fetch_add(1, Ordering::Relaxed);
        // The text names the parse failure (a fixed phrase from actix-http), never request
        // bytes.
        tracing::debug!(
            error = &message.0[at..],
            "malformed HTTP request answered 400"
        );
        false
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}
