//! Envelope encryption for protected column values (no I/O).
#![forbid(unsafe_code)]
