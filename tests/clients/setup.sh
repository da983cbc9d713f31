#!/usr/bin/env bash
# Installs the real-client drivers the integration tests run (see README.md):
#   - a Python venv at ${PGVEIL_CLIENTS_DIR:-<repo>/target/clients}/venv with
#     psycopg 3, asyncpg and SQLAlchemy, pinned in requirements.txt;
#   - node-postgres in tests/clients/node/node_modules, from package-lock.json
#     (npm ci).
# Idempotent and non-interactive; when everything is in place it only checks
# stamps and returns in well under a second. Concurrent runs wait for each other.
# Progress goes to stderr; stdout ends with the line PYTHON=<venv python>.
# Environment: PGVEIL_CLIENTS_DIR (where the venv goes), PGVEIL_PYTHON (the
# interpreter that creates it, default python3), PGVEIL_NODE / PGVEIL_NPM.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
clients_dir=${PGVEIL_CLIENTS_DIR:-$repo/target/clients}
venv=$clients_dir/venv
python=${PGVEIL_PYTHON:-python3}
node=${PGVEIL_NODE:-node}
npm=${PGVEIL_NPM:-npm}
node_dir=$here/node

say() { printf 'tests/clients/setup.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

mkdir -p "$clients_dir" || die "cannot create $clients_dir"

# One setup at a time (integration tests may start several at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$clients_dir/.setup.lock"
  flock -w 900 9 || die "timed out waiting for another setup.sh (lock $clients_dir/.setup.lock)"
fi

sha() { cat "$@" | sha256sum | cut -c1-64; }

# --- Python ----------------------------------------------------------------
command -v "$python" >/dev/null 2>&1 || die "'$python' not found: install Python 3.10+ (or set PGVEIL_PYTHON)"
py_version=$("$python" -c 'import sys; print(sys.version if sys.version_info >= (3, 10) else "")') \
  || die "'$python' does not run"
[ -n "$py_version" ] || die "$("$python" --version 2>&1) is too old: Python 3.10+ is needed (set PGVEIL_PYTHON)"
py_stamp_want="$(sha "$here/requirements.txt") $(printf '%s' "$py_version" | sha256sum | cut -c1-16)"
py_stamp_file=$venv/.pgveil-requirements

if [ -f "$py_stamp_file" ] && [ "$(cat "$py_stamp_file")" = "$py_stamp_want" ] \
   && "$venv/bin/python" -c 'import importlib.util as u, sys
sys.exit(0 if u.find_spec("psycopg") and u.find_spec("asyncpg") and u.find_spec("sqlalchemy") else 1)' >/dev/null 2>&1; then
  say "python venv up to date ($venv)"
else
  say "creating python venv in $venv"
  started=$SECONDS
  rm -rf "$venv"
  "$python" -m venv "$venv" \
    || die "'$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$venv/bin/python" -m pip install -q \
      --no-warn-script-location -r "$here/requirements.txt" >&2 \
    || { rm -rf "$venv"; die "pip install -r tests/clients/requirements.txt failed (is PyPI reachable?)"; }
  "$venv/bin/python" -c 'import psycopg, asyncpg, sqlalchemy' \
    || { rm -rf "$venv"; die "psycopg/asyncpg/sqlalchemy do not import after installation"; }
  printf '%s\n' "$py_stamp_want" >"$py_stamp_file"
  say "python venv ready in $((SECONDS - started)) s"
fi

# --- Node ------------------------------------------------------------------
command -v "$node" >/dev/null 2>&1 || die "'$node' not found: install Node.js 18+ (or set PGVEIL_NODE)"
"$node" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
  || die "node $("$node" --version) is too old: Node.js 18+ is needed"
node_stamp_want=$(sha "$node_dir/package.json" "$node_dir/package-lock.json")
node_stamp_file=$node_dir/node_modules/.pgveil-lock

if [ -f "$node_stamp_file" ] && [ "$(cat "$node_stamp_file")" = "$node_stamp_want" ] \
   && [ -f "$node_dir/node_modules/pg/package.json" ]; then
  say "node_modules up to date ($node_dir/node_modules)"
else
  command -v "$npm" >/dev/null 2>&1 || die "'$npm' not found: install npm (or set PGVEIL_NPM)"
  say "npm ci in $node_dir"
  started=$SECONDS
  (cd "$node_dir" && "$npm" ci --no-audit --no-fund --loglevel=error >&2) \
    || die "npm ci in tests/clients/node failed (is the npm registry reachable?)"
  (cd "$node_dir" && "$node" -e 'require("pg")') || die "node-postgres does not load after npm ci"
  printf '%s\n' "$node_stamp_want" >"$node_stamp_file"
  say "node_modules ready in $((SECONDS - started)) s"
fi

echo "NODE=$(command -v "$node")"
echo "PYTHON=$venv/bin/python"
