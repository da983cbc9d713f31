//! pgveil: a transparent PostgreSQL wire-protocol encryption proxy.
//!
//! This is the only crate of the workspace that performs I/O: sockets, TLS,
//! files, child processes. Protocol, crypto and policy logic live in the pure
//! `pgveil-wire`, `pgveil-crypto` and `pgveil-policy` crates.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod cancel;
pub mod check;
pub mod config;
pub mod error;
pub mod guard;
pub mod keys;
pub mod reencrypt;
pub mod report;
pub mod server;
pub mod session;
pub mod tls;

pub use config::Config;
pub use server::run;
pub mod certs;
pub mod demo;
pub mod pgtemp;
