//! Test harness: ephemeral PostgreSQL clusters and an in-process pgveil.
#![forbid(unsafe_code)]
