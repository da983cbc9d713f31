#!/usr/bin/env bash
# Cost of column encryption: pgveil (clinic policy, ciphertext schema) against
# direct PostgreSQL on a plaintext copy of the same tables, in one run.
#
#   benches/encryption-compare.sh [READ_ITERATIONS] [INSERT_SECONDS]
#
# 1. Read latency: SELECT of 100 rows x 4 protected columns (first_name,
#    last_name, ssn, date_of_birth), one client, extended (prepared) and
#    simple protocol; p50/p99 from pgbench's per-transaction log.
# 2. Bulk INSERT throughput: 10-row multi-VALUES inserts of visits with 4
#    protected columns, 4 clients, prepared protocol; rows per second.
#    Also the same plaintext query through pgveil without a policy: the cost
#    of the extra network hop alone, which no proxy avoids.
# 3. Passthrough: pgbench -S on unprotected tables through pgveil with the
#    policy loaded vs pgveil without a policy: statements that mention no
#    protected table are not parsed, so the two should match.
# No TLS anywhere; pgbench, PostgreSQL and pgveil share the machine's cores.
set -euo pipefail
ITER=${1:-2000}
SECS=${2:-10}
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v pgbench >/dev/null || missing+=(postgresql-contrib)
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$bindir/initdb" ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

cargo build --release -p pgveil --bin pgveil >/dev/null 2>&1 || cargo build --release -p pgveil --bin pgveil
PGVEIL=$PWD/target/release/pgveil
POLICY_SRC=$PWD/config/clinic.example.toml

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/pgveil-encbench-XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$work"

PG_PORT=$(free_port); VEIL_PORT=$(free_port); BARE_PORT=$(free_port)
cleanup() {
  [ -n "${VEIL_PID:-}" ] && kill "$VEIL_PID" 2>/dev/null || true
  [ -n "${BARE_PID:-}" ] && kill "$BARE_PID" 2>/dev/null || true
  as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
cat >> "$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$work'
max_connections = 100
shared_buffers = 256MB
fsync = off
synchronous_commit = off
CONF
as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
PSQL() { as_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 "$@"; }

# The storage schema (ciphertext in text/bytea), as the policy's DDL block
# has it, in database enc; the logical schema in database plain.
awk '/^# Schema \(DDL\)/{on=1; next} on && /^#   /{sub(/^#   /, ""); print; next} on && !/^#/{exit}' \
  "$POLICY_SRC" > "$work/ddl.sql"
PSQL -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE enc" -c "CREATE DATABASE plain"
PSQL -p "$PG_PORT" -U postgres -d enc -f "$work/ddl.sql"
PSQL -p "$PG_PORT" -U postgres -d plain -f "$work/ddl.sql"
PSQL -p "$PG_PORT" -U postgres -d plain -c "ALTER TABLE patients ALTER date_of_birth TYPE date USING NULL, ALTER medical_history TYPE text USING NULL"
as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s 10 -q enc >/dev/null 2>&1

cp "$POLICY_SRC" "$work/clinic.toml"
cat > "$work/pgveil.toml" <<CONF
listen = "127.0.0.1:$VEIL_PORT"
[upstream]
address = "127.0.0.1:$PG_PORT"
[policy]
file = "clinic.toml"
[admin]
enabled = false
CONF
"$PGVEIL" keys init --config "$work/pgveil.toml" >/dev/null
"$PGVEIL" serve --config "$work/pgveil.toml" 2>"$work/pgveil.log" &
VEIL_PID=$!
PGVEIL_ADMIN__ENABLED=false \
  "$PGVEIL" serve --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$PG_PORT" 2>"$work/pgveil-bare.log" &
BARE_PID=$!
sleep 1

# 100 patients, written through pgveil (ciphertext) and directly (plaintext).
rows=$(python3 -c "print(','.join(f\"('First{i}', 'Last{i}', '{i:03d}-00-{i:04d}', '19{i%100:02d}-0{1+i%9}-1{i%9}')\" for i in range(100)))")
PSQL -p "$VEIL_PORT" -U postgres -d enc -c "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) VALUES $rows"
PSQL -p "$PG_PORT" -U postgres -d plain -c "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) VALUES $rows"
[ "$(PSQL -p "$PG_PORT" -U postgres -d enc -At -c "SELECT count(*) FROM patients WHERE ssn LIKE 'pgv1:%'")" = 100 ] \
  || { echo "enc.patients does not hold ciphertext" >&2; exit 1; }

echo 'SELECT first_name, last_name, ssn, date_of_birth FROM patients;' > "$work/select.sql"
cat > "$work/insert.sql" <<'SQL'
\set r random(1, 1000000000)
INSERT INTO visits (patient_id, patient_ssn, visit_date, provider, subjective, objective, assessment) VALUES
 (1, :r, '2024-01-01', 'dr', :r, :r, :r), (1, :r, '2024-01-01', 'dr', :r, :r, :r),
 (1, :r, '2024-01-01', 'dr', :r, :r, :r), (1, :r, '2024-01-01', 'dr', :r, :r, :r),
 (1, :r, '2024-01-01', 'dr', :r, :r, :r), (1, :r, '2024-01-01', 'dr', :r, :r, :r),
 (1, :r, '2024-01-01', 'dr', :r, :r, :r), (1, :r, '2024-01-01', 'dr', :r, :r, :r),
 (1, :r, '2024-01-01', 'dr', :r, :r, :r), (1, :r, '2024-01-01', 'dr', :r, :r, :r);
SQL
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"

latency() { # port db mode tag: appends per-transaction latencies to $work/lat.<tag>
  rm -f "$work"/pgbench_log.*
  (cd "$work" && as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n -c 1 -t "$ITER" -M "$3" \
     -f "$work/select.sql" -l --log-prefix="$work/pgbench_log" "$2" >/dev/null 2>&1)
  awk '{print $3}' "$work"/pgbench_log.* >> "$work/lat.$4"
}
percentiles() { # tag -> "p50 p99" in ms
  python3 - "$work/lat.$1" <<'PY'
import sys
lat = sorted(int(l) for l in open(sys.argv[1]))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
print(f"{q(0.50):.3f} {q(0.99):.3f}")
PY
}
tps() { # port db mode script|-S clients secs
  local args
  if [ "$4" = "-S" ]; then args=(-S); else args=(-f "$4"); fi
  as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n "${args[@]}" -c "$5" -j 2 -T "$6" -M "$3" "$2" 2>&1 |
    awk '/^tps = /{print $3; exit}'
}

echo "== read: SELECT 100 rows x 4 protected columns, 3 x $ITER iterations per target (interleaved), 1 client"
printf '%-9s %-22s %9s %9s\n' mode target p50_ms p99_ms
declare -A lat
for mode in prepared simple; do
  for rep in 1 2 3; do
    latency "$PG_PORT" plain $mode "$mode.direct_plain"
    latency "$BARE_PORT" plain $mode "$mode.pgveil_nopolicy_plain"
    latency "$VEIL_PORT" enc $mode "$mode.pgveil_encrypted"
  done
  for target in direct_plain pgveil_nopolicy_plain pgveil_encrypted; do
    lat[$mode,$target]=$(percentiles "$mode.$target")
    printf '%-9s %-22s %9s %9s\n' $mode $target ${lat[$mode,$target]}
  done
  python3 -c "
d=[float(x) for x in '${lat[$mode,direct_plain]}'.split()]; v=[float(x) for x in '${lat[$mode,pgveil_encrypted]}'.split()]
n=[float(x) for x in '${lat[$mode,pgveil_nopolicy_plain]}'.split()]
print(f'$mode ratio pgveil/direct: p50 {v[0]/d[0]:.2f}x  p99 {v[1]/d[1]:.2f}x  (target p50 <= 1.3x); the proxy hop alone: p50 {n[0]/d[0]:.2f}x')"
done

echo
echo "== bulk insert: 10-row INSERTs of visits with 4 protected columns, 4 clients, 2 x ${SECS}s interleaved, prepared"
d=0; n=0; v=0
for rep in 1 2; do
  d=$(python3 -c "print($d + $(tps "$PG_PORT" plain prepared "$work/insert.sql" 4 "$SECS") / 2)")
  n=$(python3 -c "print($n + $(tps "$BARE_PORT" plain prepared "$work/insert.sql" 4 "$SECS") / 2)")
  v=$(python3 -c "print($v + $(tps "$VEIL_PORT" enc prepared "$work/insert.sql" 4 "$SECS") / 2)")
done
python3 -c "d,n,v=$d,$n,$v; print(f'direct_plain           {d*10:10.0f} rows/s\npgveil_nopolicy_plain  {n*10:10.0f} rows/s  (the hop alone: {n/d:.2f}x)\npgveil_encrypted       {v*10:10.0f} rows/s\nratio pgveil/direct: {v/d:.2f}x  (target >= 0.7x); encryption itself: {v/n:.2f}x of the bare proxy')"
[ "$(PSQL -p "$PG_PORT" -U postgres -d enc -At -c "SELECT count(*) FROM visits WHERE subjective NOT LIKE 'pgv1:%'")" = 0 ] \
  || { echo "plaintext found in enc.visits" >&2; exit 1; }

echo
echo "== passthrough: pgbench -S (unprotected tables), 8 clients, ${SECS}s, pgveil with vs without the policy"
for mode in simple prepared; do
  a=0; b=0
  for rep in 1 2; do
    a=$(python3 -c "print($a + $(tps "$VEIL_PORT" enc $mode -S 8 "$SECS"))")
    b=$(python3 -c "print($b + $(tps "$BARE_PORT" enc $mode -S 8 "$SECS"))")
  done
  python3 -c "a,b=$a/2,$b/2; print(f'$mode: with policy {a:9.0f} tps, without {b:9.0f} tps, ratio {a/b:.3f}')"
done
