#!/usr/bin/env bash
# Long runs of the two fuzzers against a real PostgreSQL (the CI runs are
# 20,000 statements and 5,000 protocol sequences). Every run uses a new
# seed and prints it; a failure prints the seed to replay with
# PGVEIL_FUZZ_SEED.
#
#   benches/fuzz-soak.sh [STATEMENTS] [SEQUENCES] [ROUNDS]
#
# Defaults: 1,000,000 statements and 100,000 protocol sequences, split into
# rounds of equal size (one PostgreSQL cluster per round keeps its server
# log, which the oracles read, to a manageable size). PROFILE=test reuses
# the test suite's build instead of compiling a release one.
set -euo pipefail
cd "$(dirname "$0")/.."
statements=${1:-1000000}
sequences=${2:-100000}
rounds=${3:-10}
case "${PROFILE:-release}" in
  test) profile=() ;;
  *) profile=(--profile "${PROFILE:-release}") ;;
esac
cargo build -q "${profile[@]}" -p pgveil-tests --tests
start=$(date +%s)
for r in $(seq 1 "$rounds"); do
  seed=$(( ( $(date +%s%N) ^ (r * 2654435761) ) & 0x7fffffffffffffff ))
  echo "round $r/$rounds: seed $seed"
  PGVEIL_FUZZ_SEED=$seed PGVEIL_FUZZ_STATEMENTS=$(( statements / rounds )) \
    cargo test -q "${profile[@]}" -p pgveil-tests --test fuzz_statements -- --nocapture 2>&1 | grep -E "fuzz seed|panicked|test result"
  PGVEIL_FUZZ_SEED=$seed PGVEIL_FUZZ_SEQUENCES=$(( sequences / rounds )) \
    cargo test -q "${profile[@]}" -p pgveil-tests --test fuzz_protocol -- --nocapture 2>&1 | grep -E "protocol fuzz|panicked|test result"
done
echo "done in $(( $(date +%s) - start )) s: $statements statements, $sequences protocol sequences"
