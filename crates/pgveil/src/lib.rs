//! pgveil: a transparent PostgreSQL wire-protocol encryption proxy.
//!
//! This is the only crate of the workspace that performs I/O.
#![forbid(unsafe_code)]
