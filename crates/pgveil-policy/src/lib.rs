//! The TOML column policy (no I/O).
#![forbid(unsafe_code)]
