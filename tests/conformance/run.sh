#!/usr/bin/env bash
# Conformance run: the own test suites of three client projects (asyncpg,
# psycopg2, pg8000; versions pinned in requirements.txt, suites from the same
# versions' sdists listed in sdists.txt) run three ways against one
# PostgreSQL: directly, through pgveil without a policy, and through pgveil
# with the clinic policy loaded (its tables present in the suites' databases).
# Every test's outcome through pgveil must equal its outcome directly (same
# passes, same failures); differences listed in known-differences.txt are
# reported and allowed. A test that differs is rerun once both ways, so a
# timing flake shows as such instead of failing the run.
#
#   bash tests/conformance/run.sh [ci|full]
#
# ci (the default, part of tests/run.sh): the suites' connection, LISTEN/
# NOTIFY, cancel, pool, COPY, prepared-statement and transaction tests, about
# 3 minutes. full: every test of the three suites, about 8 minutes.
#
# Installs what it needs: a venv in ${CONFORMANCE_DIR:-target/conformance}
# (from PyPI), the sdists (checked against their sha256), PostgreSQL from
# Debian's packages when missing. Reports go to $CONFORMANCE_DIR/reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
here=$repo/tests/conformance
scope=${1:-ci}
case $scope in ci|full) ;; *) echo "usage: $0 [ci|full]" >&2; exit 2 ;; esac
dir=${CONFORMANCE_DIR:-$repo/target/conformance}
say() { printf 'conformance: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
mkdir -p "$dir/sdists" "$dir/reports"

# --- tools: PostgreSQL, the venv, the suites ---------------------------------
bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ ! -x "${bindir:-/nonexistent}/initdb" ]; then
  [ "$(id -u)" = 0 ] || die "PostgreSQL server binaries not found (initdb)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

exec 9>"$dir/.lock"
flock -w 900 9 || die "another conformance run holds $dir/.lock"
venv=$dir/venv
stamp="$(cat "$here/requirements.txt" | sha256sum | cut -c1-64) $(python3 -c 'import sys; print(sys.version)' | sha256sum | cut -c1-16)"
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  say "creating venv in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$venv/bin/python" -m pip install -q \
    --no-warn-script-location -r "$here/requirements.txt" >&2 || { rm -rf "$venv"; die "pip install failed"; }
  printf '%s\n' "$stamp" >"$venv/.stamp"
fi
py=$venv/bin/python

suites=()
while read -r name sub sha url; do
  case $name in ''|'#'*) continue ;; esac
  tarball=$dir/sdists/${url##*/}
  if ! echo "$sha  $tarball" | sha256sum -c --quiet - >/dev/null 2>&1; then
    say "downloading ${url##*/}"
    curl -sfL --retry 3 -o "$tarball.part" "$url" || die "download of $url failed"
    echo "$sha  $tarball.part" | sha256sum -c --quiet - || die "${url##*/}: sha256 mismatch"
    mv "$tarball.part" "$tarball"
  fi
  # Only the suite, outside the sdist tree: the sdist's own (uncompiled)
  # package must not shadow the installed one.
  if [ ! -f "$dir/suites/$name/.sha" ] || [ "$(cat "$dir/suites/$name/.sha")" != "$sha" ]; then
    rm -rf "$dir/suites/$name" && mkdir -p "$dir/suites/$name"
    top=${tarball##*/}; top=${top%.tar.gz}
    tar xzf "$tarball" -C "$dir/suites/$name" --strip-components=1 "$top/$sub"
    echo "$sha" >"$dir/suites/$name/.sha"
  fi
  suites+=("$name")
done <"$here/sdists.txt"

cargo build -q -p pgveil --bin pgveil
pgveil=$repo/target/debug/pgveil

# --- PostgreSQL: one cluster, restored to the same state before each mode ---
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/pgveil-conformance-XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$work"
pg_port=$(free_port); bare_port=$(free_port); veil_port=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
pg_start() { as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null; }
pg_stop() { as_pg "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null; }
psql_() { as_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }

as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
max_connections = 200
max_prepared_transactions = 10
fsync = off
CONF
pg_start
awk '/^# Schema \(DDL\)/{on=1; next} on && /^#   /{sub(/^#   /, ""); print; next} on && !/^#/{exit}' \
  "$repo/config/clinic.example.toml" >"$work/clinic.sql"
psql_ -p "$pg_port" -d postgres -c "CREATE DATABASE psycopg2_test"
for db in postgres psycopg2_test; do psql_ -p "$pg_port" -d "$db" -f "$work/clinic.sql"; done
pg_stop
as_pg cp -a "$work/data" "$work/pristine"

cp "$repo/config/clinic.example.toml" "$work/clinic.toml"
cat >"$work/pgveil.toml" <<CONF
listen = "127.0.0.1:$veil_port"
[upstream]
address = "127.0.0.1:$pg_port"
[policy]
file = "clinic.toml"
[admin]
enabled = false
CONF
(cd "$work" && "$pgveil" keys init --config pgveil.toml >/dev/null)
(cd "$work" && exec "$pgveil" serve --config pgveil.toml 2>"$work/pgveil-policy.log") &
pids+=($!)
PGVEIL_ADMIN__ENABLED=false "$pgveil" serve --listen "127.0.0.1:$bare_port" \
  --upstream "127.0.0.1:$pg_port" 2>"$work/pgveil-bare.log" &
pids+=($!)

# --- the suites ---------------------------------------------------------------
# The CI subset: each suite's tests of connections, LISTEN/NOTIFY, cancel,
# pools, COPY, prepared statements, transactions and cursors.
selection() {
  case $scope:$1 in
    ci:asyncpg) echo tests/test_listeners.py tests/test_cancellation.py tests/test_pool.py \
      tests/test_execute.py tests/test_prepare.py tests/test_copy.py tests/test_transaction.py \
      tests/test_cursor.py tests/test_cache_invalidation.py tests/test_adversity.py ;;
    ci:psycopg2) echo tests/test_connection.py tests/test_notify.py tests/test_cancel.py \
      tests/test_async.py tests/test_copy.py tests/test_transaction.py tests/test_cursor.py \
      tests/test_green.py ;;
    ci:pg8000) echo test/native/test_connection.py test/native/test_copy.py \
      test/native/test_prepared_statement.py test/dbapi/test_dbapi.py test/dbapi/test_query.py \
      test/dbapi/test_copy.py test/legacy/test_error_recovery.py test/legacy/test_prepared_statement.py ;;
    full:asyncpg|full:psycopg2) echo tests ;;
    full:pg8000) echo test ;;
  esac
}
# run_suite SUITE PORT REPORT [NODE-ID...]
run_suite() {
  local suite=$1 port=$2 report=$3
  shift 3
  local targets
  if [ $# -gt 0 ]; then targets=("$@"); else read -r -a targets <<<"$(selection "$suite")"; fi
  (cd "$dir/suites/$suite" && env PGHOST=127.0.0.1 PGPORT="$port" PGUSER=postgres PGDATABASE= \
     PGPASSWORD= PYTHONDONTWRITEBYTECODE=1 timeout 1200 "$py" -m pytest -q -p no:cacheprovider \
     -o junit_family=xunit1 --junitxml="$report" "${targets[@]}" >"$report.log" 2>&1) || true
  [ -s "$report" ] || die "$suite on port $port produced no report (see $report.log)"
}

modes=(direct:$pg_port nopolicy:$bare_port policy:$veil_port)
reports=$dir/reports/$scope
rm -rf "$reports" && mkdir -p "$reports"
for m in "${modes[@]}"; do
  mode=${m%%:*} port=${m#*:}
  as_pg rm -rf "$work/data" && as_pg cp -a "$work/pristine" "$work/data"
  pg_start
  if [ "$mode" = policy ]; then
    # The policy is live: a write through pgveil stores ciphertext.
    psql_ -p "$veil_port" -d postgres -c "INSERT INTO patients (first_name, last_name, ssn) VALUES ('Conformance', 'Probe', '078-05-1120')"
    [ "$(psql_ -p "$pg_port" -d postgres -tAc "SELECT count(*) FROM patients WHERE ssn LIKE 'pgv1:%' AND first_name LIKE 'pgv1:%'")" = 1 ] \
      || die "the policy proxy did not encrypt"
  fi
  for s in "${suites[@]}"; do
    started=$SECONDS
    run_suite "$s" "$port" "$reports/$s.$mode.xml"
    say "$(printf '%-9s %-9s %4ds  %s' "$s" "$mode" $((SECONDS - started)) "$("$py" "$here/outcomes.py" summary "$reports/$s.$mode.xml")")"
  done
  [ "$mode" = policy ] || pg_stop
done

status=0
for s in "${suites[@]}"; do
  for mode in nopolicy policy; do
    say "$s: direct vs pgveil ($mode)"
    port=$bare_port; [ "$mode" = policy ] && port=$veil_port
    if ! "$py" "$here/outcomes.py" diff "$reports/$s.direct.xml" "$reports/$s.$mode.xml" \
        --known "$here/known-differences.txt" --ids "$reports/$s.$mode.differ" >&2; then
      # Rerun what differs, both ways, on the cluster as the policy mode left it.
      mapfile -t ids <"$reports/$s.$mode.differ"
      run_suite "$s" "$pg_port" "$reports/$s.$mode.rerun-direct.xml" "${ids[@]}"
      run_suite "$s" "$port" "$reports/$s.$mode.rerun-pgveil.xml" "${ids[@]}"
      if "$py" "$here/outcomes.py" diff "$reports/$s.$mode.rerun-direct.xml" \
          "$reports/$s.$mode.rerun-pgveil.xml" >&2; then
        say "$s ($mode): the differences above did not repeat (timing flakes)"
      else
        say "$s ($mode): outcomes through pgveil differ from direct"
        status=1
      fi
    fi
  done
done
if grep -h -E 'panicked|ERROR' "$work"/pgveil-*.log >&2; then
  say "pgveil logged errors or panics (above)"
  status=1
fi
[ $status = 0 ] && say "$scope run: outcomes through pgveil equal outcomes directly"
exit $status
