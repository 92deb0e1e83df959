//! Hardening: money never moves the wrong way, twice, or past a block.
