//! PostgreSQL wire protocol codec (no I/O).
#![forbid(unsafe_code)]
