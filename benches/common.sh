# Shared by the benchmark scripts: a throwaway PostgreSQL cluster (trust auth,
# fsync off) with the clinic schema in database enc (ciphertext storage types)
# and in database plain (logical types), pgveil with the clinic policy on
# $VEIL_PORT and pgveil without a policy on $BARE_PORT. Source it after
# `cd` to the repository root; sets PG_PORT, VEIL_PORT, BARE_PORT, VEIL_PID,
# BARE_PID, work, bindir, PSQL and as_pg, and cleans up on exit.
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
if [ "${PGBENCH_INIT:-1}" = 1 ]; then
  as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s 10 -q enc >/dev/null 2>&1
fi

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

# Per-transaction latency of one pgbench SCRIPT (1 client, $ITER
# transactions), direct on database plain, through pgveil without a policy on
# plain, and through pgveil on the encrypted database enc: 3 interleaved
# rounds per protocol MODE, then p50/p99 and the ratios to direct.
#   latency_table SCRIPT TARGET_P50_RATIO MODE...
latency() { # port db mode script tag: appends latencies (us) to $work/lat.<tag>
  rm -f "$work"/pgbench_log.*
  (cd "$work" && as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n -c 1 -t "$ITER" -M "$3" \
     -f "$4" -l --log-prefix="$work/pgbench_log" "$2" >"$work/pgbench.out" 2>&1) \
    || { cat "$work/pgbench.out" >&2; exit 1; }
  grep -q "number of failed transactions: 0" "$work/pgbench.out" \
    || { cat "$work/pgbench.out" >&2; exit 1; }
  awk '{print $3}' "$work"/pgbench_log.* >> "$work/lat.$5"
}
percentiles() { # tag -> "p50 p99" in ms
  python3 - "$work/lat.$1" <<'PY'
import sys
lat = sorted(int(l) for l in open(sys.argv[1]))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
print(f"{q(0.50):.3f} {q(0.99):.3f}")
PY
}
latency_table() {
  local script=$1 target=$2 mode t rep
  shift 2
  printf '%-9s %-22s %9s %9s\n' mode target p50_ms p99_ms
  for mode in "$@"; do
    for rep in 1 2 3; do
      latency "$PG_PORT" plain "$mode" "$script" "$mode.direct_plain"
      latency "$BARE_PORT" plain "$mode" "$script" "$mode.pgveil_nopolicy_plain"
      latency "$VEIL_PORT" enc "$mode" "$script" "$mode.pgveil_encrypted"
    done
    local d n v
    d=$(percentiles "$mode.direct_plain"); n=$(percentiles "$mode.pgveil_nopolicy_plain"); v=$(percentiles "$mode.pgveil_encrypted")
    for t in "direct_plain $d" "pgveil_nopolicy_plain $n" "pgveil_encrypted $v"; do
      # shellcheck disable=SC2086
      printf '%-9s %-22s %9s %9s\n' "$mode" $t
    done
    python3 -c "
d=[float(x) for x in '$d'.split()]; n=[float(x) for x in '$n'.split()]; v=[float(x) for x in '$v'.split()]
print(f'$mode ratio pgveil/direct: p50 {v[0]/d[0]:.2f}x  p99 {v[1]/d[1]:.2f}x  (target p50 <= ${target}x); the proxy hop alone: p50 {n[0]/d[0]:.2f}x')"
  done
}

# The encrypted-read and insert workloads shared by encryption-compare.sh and
# audit-access-compare.sh: $work/select.sql (100 rows x 4 protected columns,
# once seed_patients has run) and $work/insert.sql (10-row INSERTs of visits
# with 4 protected columns); PATIENT_ROWS is the 100 patients as VALUES.
PATIENT_ROWS=$(python3 -c "print(','.join(f\"('First{i}', 'Last{i}', '{i:03d}-00-{i:04d}', '19{i%100:02d}-0{1+i%9}-1{i%9}')\" for i in range(100)))")
seed_patients() { # port db
  PSQL -p "$1" -U postgres -d "$2" -c "INSERT INTO patients (first_name, last_name, ssn, date_of_birth) VALUES $PATIENT_ROWS"
}
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
