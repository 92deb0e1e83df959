//! Hardening: what the processor sends is bounded and readable before it is booked or logged.
