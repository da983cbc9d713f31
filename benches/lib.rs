//! Benchmarks live in this folder: criterion benches (`cargo bench -p pgveil-benches`) and shell scripts.
#![forbid(unsafe_code)]
