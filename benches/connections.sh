#!/usr/bin/env bash
# Memory per idle client connection: N clients connect through pgveil (clinic
# policy loaded, the clinic schema present) and stay idle after one query on
# a protected table; the proxy's RSS (VmRSS) before and after, divided by N.
# Once in the clear and once over TLS (a throwaway self-signed certificate).
# PostgreSQL's own backends are not counted.
#
#   benches/connections.sh [N]        (default 1000)
set -euo pipefail
N=${1:-1000}
cd "$(dirname "$0")/.."
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
cargo build --release -q -p pgveil --bin pgveil
PGVEIL=$PWD/target/release/pgveil
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work=$(mktemp -d /tmp/pgveil-conns-XXXXXX); chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown postgres: "$work"
PG=$(free_port); V=$(free_port)
VEIL_PID=
cleanup() {
  [ -n "$VEIL_PID" ] && kill "$VEIL_PID" 2>/dev/null || true
  as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 8192

as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG
unix_socket_directories = '$work'
max_connections = $((N + 20))
shared_buffers = 128MB
fsync = off
CONF
as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
awk '/^# Schema \(DDL\)/{on=1; next} on && /^#   /{sub(/^#   /, ""); print; next} on && !/^#/{exit}' \
  config/clinic.example.toml >"$work/ddl.sql"
as_pg "$bindir/psql" -X -q -h 127.0.0.1 -p "$PG" -U postgres -d postgres -f "$work/ddl.sql"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=localhost" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cp config/clinic.example.toml "$work/clinic.toml"
cat >"$work/pgveil.toml" <<CONF
listen = "127.0.0.1:$V"
max_connections = $((N + 10))
[upstream]
address = "127.0.0.1:$PG"
[policy]
file = "clinic.toml"
[tls]
cert_file = "cert.pem"
key_file = "key.pem"
[admin]
enabled = false
CONF
(cd "$work" && "$PGVEIL" keys init --config pgveil.toml >/dev/null)
# A fresh proxy per measurement: memory freed by one run's connections would
# otherwise be reused by the next and hide its cost.
start_veil() {
  [ -n "$VEIL_PID" ] && kill "$VEIL_PID" 2>/dev/null && wait "$VEIL_PID" 2>/dev/null || true
  (cd "$work" && exec "$PGVEIL" serve --config pgveil.toml 2>>"$work/pgveil.log") &
  VEIL_PID=$!
  sleep 1
}

rss() { awk '/^VmRSS/{print $2}' "/proc/$VEIL_PID/status"; }
measure() { # sslmode
  PYTHONPATH=benches python3 - "$V" "$N" "$1" "$VEIL_PID" <<'PY'
import sys, time
import rawpg
port, n, mode, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def connect():
    s = rawpg.connect(port, "postgres", tls=mode == "tls")
    rawpg.query(s, "SELECT first_name, ssn FROM patients WHERE ssn = '000-00-0000'")
    return s
# Warm-up: the first connection loads the catalog and the runtime's pools.
warm = [connect() for _ in range(10)]
time.sleep(0.5)
before = rss()
conns = [connect() for _ in range(n)]
time.sleep(1.0)
after = rss()
print(f"{mode:5s} {n} idle connections: RSS {before} KiB -> {after} KiB, {(after - before) / n:.1f} KiB per connection")
for s in conns + warm:
    s.close()
PY
}
start_veil
echo "pgveil RSS at start: $(rss) KiB"
measure plain
start_veil
measure tls
