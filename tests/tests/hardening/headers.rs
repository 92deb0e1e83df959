//! Hardening: ambiguous security headers, failed admin authentication, noise from malformed HTTP.
