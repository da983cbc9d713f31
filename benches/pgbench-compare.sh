#!/usr/bin/env bash
# Throughput of pgveil against direct PostgreSQL and PgBouncer (session mode),
# measured in one run, interleaved A/B/C, A/B/C so drift hits all alike.
#
#   benches/pgbench-compare.sh [REPS] [SECONDS]
#
# Workload: pgbench -S (select-only) -c 8 -j 2, simple and prepared protocol,
# no TLS anywhere. pgveil runs twice: with metrics (admin listener, statement
# timing; the default) and without (admin.enabled = false), to show what
# observability costs; metrics_cost is 1 - with/without. pgbench, PostgreSQL and the proxy share the machine's cores,
# so every microsecond of proxy CPU shows as lost TPS.
set -euo pipefail
REPS=${1:-2}
SECS=${2:-15}
CLIENTS=${CLIENTS:-8}
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v pgbench >/dev/null || missing+=(postgresql-contrib)
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$bindir/initdb" ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

cargo build --release -p pgveil --bin pgveil >/dev/null 2>&1 || cargo build --release -p pgveil --bin pgveil
PGVEIL=$PWD/target/release/pgveil

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/pgveil-bench-XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$work"

PG_PORT=$(free_port); VEIL_PORT=$(free_port); BOUNCER_PORT=$(free_port)
BARE_PORT=$(free_port); ADMIN_PORT=$(free_port)
cleanup() {
  [ -n "${VEIL_PID:-}" ] && kill "$VEIL_PID" 2>/dev/null || true
  [ -n "${BARE_PID:-}" ] && kill "$BARE_PID" 2>/dev/null || true
  [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true
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
as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

# pgveil with metrics (admin listener on, statement timing) and without.
PGVEIL_ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" \
  "$PGVEIL" serve --listen "127.0.0.1:$VEIL_PORT" --upstream "127.0.0.1:$PG_PORT" 2>"$work/pgveil.log" &
VEIL_PID=$!
PGVEIL_ADMIN__ENABLED=false \
  "$PGVEIL" serve --listen "127.0.0.1:$BARE_PORT" --upstream "127.0.0.1:$PG_PORT" 2>"$work/pgveil-bare.log" &
BARE_PID=$!

cat > "$work/pgbouncer.ini" <<CONF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
CONF
echo '"postgres" ""' > "$work/userlist.txt"
[ "$(id -u)" = 0 ] && chown postgres: "$work"/pgbouncer.ini "$work/userlist.txt"
as_pg "$PGBOUNCER" -d "$work/pgbouncer.ini"
sleep 1

run() { # target port mode
  as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$2" -U postgres -S -c "$CLIENTS" -j 2 -T "$SECS" -M "$3" -n postgres 2>&1 |
    awk '/^tps = /{print $3; exit}'
}

declare -A sum
for mode in simple prepared; do
  for rep in $(seq 1 "$REPS"); do
    for target in direct pgveil pgveil_nometrics pgbouncer; do
      case $target in direct) port=$PG_PORT;; pgveil) port=$VEIL_PORT;; pgveil_nometrics) port=$BARE_PORT;; pgbouncer) port=$BOUNCER_PORT;; esac
      tps=$(run "$target" "$port" "$mode")
      printf '%-9s %-16s rep %d: %10.0f tps\n' "$mode" "$target" "$rep" "$tps"
      sum[$mode,$target]=$(python3 -c "print(${sum[$mode,$target]:-0} + $tps)")
    done
  done
done

echo
printf '%-9s %10s %10s %12s %10s %9s %9s %11s\n' mode direct pgveil pgveil_nomet pgbouncer veil/dir veil/bnc metrics_cost
for mode in simple prepared; do
  python3 - "$mode" "${sum[$mode,direct]}" "${sum[$mode,pgveil]}" "${sum[$mode,pgveil_nometrics]}" "${sum[$mode,pgbouncer]}" "$REPS" <<'PY'
import sys
mode, d, v, n, b, reps = sys.argv[1], *map(float, sys.argv[2:6]), int(sys.argv[6])
d, v, n, b = d / reps, v / reps, n / reps, b / reps
print(f"{mode:<9} {d:10.0f} {v:10.0f} {n:12.0f} {b:10.0f} {v/d:9.3f} {v/b:9.3f} {1 - v/n:+10.1%}")
PY
done
