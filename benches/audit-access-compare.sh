#!/usr/bin/env bash
# Cost of the access rules and the audit log (issue 14): pgveil with the
# clinic policy and neither (off) against the same policy with an [access]
# section (every label decrypt for the benchmark role) and [audit] enabled
# (fsync = "batch") (on), in one run, interleaved.
#
#   benches/audit-access-compare.sh [SECONDS]
#
# 1. Encrypted read: SELECT of 100 rows x 4 protected columns, 1 client,
#    prepared and simple protocol; transactions per second.
# 2. Insert: 10-row INSERTs of visits with 4 protected columns, 4 clients,
#    prepared; rows per second.
# Target: on >= 0.95x off. Every statement of the "on" runs is one audit
# record; the script checks the log verifies afterwards.
set -euo pipefail
SECS=${1:-10}
cd "$(dirname "$0")/.."

# shellcheck source=benches/common.sh
PGBENCH_INIT=0 . benches/common.sh

GOV_PORT=$(free_port)
{
  cat "$work/clinic.toml"
  cat <<'TOML'

[access]
default = "deny"
[access.roles.postgres]
phi = "decrypt"
pii = "decrypt"
financial = "decrypt"
TOML
} > "$work/clinic-access.toml"
"$PGVEIL" audit keygen --dir "$work" >/dev/null
cat > "$work/pgveil-gov.toml" <<CONF
listen = "127.0.0.1:$GOV_PORT"
[upstream]
address = "127.0.0.1:$PG_PORT"
[policy]
file = "clinic-access.toml"
[keys]
keyring_file = "pgveil-keyring.json"
kek_file = "pgveil-kek.key"
[admin]
enabled = false
[audit]
enabled = true
dir = "audit"
signing_key_file = "audit-signing.key"
fsync = "batch"
CONF
"$PGVEIL" serve --config "$work/pgveil-gov.toml" 2>"$work/pgveil-gov.log" &
GOV_PID=$!
trap 'kill $GOV_PID 2>/dev/null || true; cleanup' EXIT
sleep 1

seed_patients "$VEIL_PORT" enc
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"

tps() { # port mode script clients secs
  as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n -f "$3" -c "$4" -j 2 -T "$5" -M "$2" enc 2>&1 |
    awk '/^tps = /{print $3; exit}'
}
compare() { # label mode script clients rows_per_tx
  local off=0 on=0 rep
  for rep in 1 2 3; do
    off=$(python3 -c "print($off + $(tps "$VEIL_PORT" "$2" "$3" "$4" "$SECS") / 3)")
    on=$(python3 -c "print($on + $(tps "$GOV_PORT" "$2" "$3" "$4" "$SECS") / 3)")
  done
  python3 -c "off,on,k=$off,$on,$5; print(f'$1: off {off*k:10.0f}  on {on*k:10.0f}  ratio on/off {on/off:.3f}  (target >= 0.95)')"
}

echo "== audit + access rules on vs off, 3 x ${SECS}s interleaved per row"
compare "read 100x4, prepared (tps)  " prepared "$work/select.sql" 1 1
compare "read 100x4, simple (tps)    " simple "$work/select.sql" 1 1
compare "insert 10x4, prepared (rows/s)" prepared "$work/insert.sql" 4 10

kill -TERM "$GOV_PID"; wait "$GOV_PID" 2>/dev/null || true
"$PGVEIL" audit verify "$work/audit" --public-key "$work/audit-signing.pub" | tail -2
