#!/usr/bin/env bash
# Runs every test of the workspace against a real PostgreSQL started by the
# tests themselves. Installs what a fresh Debian/Ubuntu machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pg_bindir() {
  local d
  d=$(pg_config --bindir 2>/dev/null || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then echo "$d"; return; fi
  done
}
[ -n "$(pg_bindir)" ] || need_apt+=(postgresql postgresql-contrib)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v pgbench >/dev/null || [ -x "$(pg_bindir)/pgbench" ] || need_apt+=(postgresql-contrib)
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then need_apt+=(postgresql); fi
# `pgveil report` renders in headless Chromium (tests/tests/report.rs).
command -v chromium >/dev/null || need_apt+=(chromium)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's package may start its own cluster; the tests never use it.

cargo test --workspace "$@"

# The client projects' own test suites, directly and through pgveil
# (tests/conformance/run.sh; CONFORMANCE=full for every test,
# off to skip). Only for a whole-workspace run.
conformance=${CONFORMANCE:-ci}
if [ $# -eq 0 ] && [ "$conformance" != off ]; then
  bash tests/conformance/run.sh "$conformance"
fi
