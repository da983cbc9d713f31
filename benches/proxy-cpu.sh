#!/usr/bin/env bash
# CPU time the proxy itself spends per transaction: pgveil (default, metrics
# on), pgveil without metrics, pgveil on one thread, and PgBouncer (session
# mode). Unlike TPS on a shared 2-core machine, CPU per transaction barely
# moves with background noise, so small differences show.
#
#   benches/proxy-cpu.sh [TRANSACTIONS_PER_RUN] [REPS]
#
# Workload: pgbench -S -c 8 -j 2 -t N, simple and prepared; CPU = utime+stime
# of the proxy process from /proc/PID/stat (clock ticks), before and after.
set -euo pipefail
TX=${1:-5000}
REPS=${2:-2}
CLIENTS=8
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
cargo build --release -q -p pgveil --bin pgveil
PGVEIL=$PWD/target/release/pgveil
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work=$(mktemp -d /tmp/pgveil-cpu-XXXXXX); chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown postgres: "$work"
PG=$(free_port); V1=$(free_port); V2=$(free_port); V3=$(free_port); B=$(free_port); A=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/b.pid" ] && kill "$(cat "$work/b.pid")" 2>/dev/null || true
  as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
printf "listen_addresses='127.0.0.1'\nport=$PG\nunix_socket_directories='$work'\nfsync=off\nsynchronous_commit=off\nshared_buffers=256MB\n" >> "$work/data/postgresql.conf"
as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$PG" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
PGVEIL_ADMIN__LISTEN=127.0.0.1:$A "$PGVEIL" serve --listen 127.0.0.1:$V1 --upstream 127.0.0.1:$PG 2>/dev/null & pids+=($!); P1=$!
PGVEIL_ADMIN__ENABLED=false "$PGVEIL" serve --listen 127.0.0.1:$V2 --upstream 127.0.0.1:$PG 2>/dev/null & pids+=($!); P2=$!
PGVEIL_ADMIN__ENABLED=false PGVEIL_WORKER_THREADS=1 "$PGVEIL" serve --listen 127.0.0.1:$V3 --upstream 127.0.0.1:$PG 2>/dev/null & pids+=($!); P3=$!
printf "[databases]\npostgres = host=127.0.0.1 port=$PG dbname=postgres\n[pgbouncer]\nlisten_addr=127.0.0.1\nlisten_port=$B\nunix_socket_dir=\nauth_type=trust\nauth_file=$work/u.txt\npool_mode=session\nmax_client_conn=100\ndefault_pool_size=20\nlogfile=$work/b.log\npidfile=$work/b.pid\n" > "$work/b.ini"
echo '"postgres" ""' > "$work/u.txt"; [ "$(id -u)" = 0 ] && chown postgres: "$work/b.ini" "$work/u.txt"
as_pg "$PGBOUNCER" -d "$work/b.ini"; sleep 1; PB=$(cat "$work/b.pid")
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
declare -A us
for mode in simple prepared; do
  for rep in $(seq 1 "$REPS"); do
    for t in pgveil pgveil_nometrics pgveil_1thread pgbouncer; do
      case $t in pgveil) port=$V1 pid=$P1;; pgveil_nometrics) port=$V2 pid=$P2;; pgveil_1thread) port=$V3 pid=$P3;; pgbouncer) port=$B pid=$PB;; esac
      before=$(cpu "$pid")
      tps=$(as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$port" -U postgres -S -c $CLIENTS -j 2 -t "$TX" -M "$mode" -n postgres 2>&1 | awk '/^tps/{print $3; exit}')
      after=$(cpu "$pid")
      v=$(python3 -c "print(($after-$before)/$ticks*1e6/($TX*$CLIENTS))")
      printf '%-9s %-17s rep %d: %6.1f us CPU/tx  %8.0f tps\n' "$mode" "$t" "$rep" "$v" "$tps"
      us[$mode,$t]=$(python3 -c "print(${us[$mode,$t]:-0} + $v)")
    done
  done
done
echo
printf '%-9s %8s %10s %9s %10s %12s %12s\n' mode pgveil nometrics 1thread pgbouncer veil/bouncer metrics_cost
for mode in simple prepared; do
  python3 - "$mode" "${us[$mode,pgveil]}" "${us[$mode,pgveil_nometrics]}" "${us[$mode,pgveil_1thread]}" "${us[$mode,pgbouncer]}" "$REPS" <<'PY'
import sys
m, v, n, o, b, r = sys.argv[1], *map(float, sys.argv[2:6]), int(sys.argv[6])
v, n, o, b = v / r, n / r, o / r, b / r
print(f"{m:<9} {v:8.1f} {n:10.1f} {o:9.1f} {b:10.1f} {v/b:12.2f} {v/n-1:+12.1%}")
PY
done
echo "(us CPU/tx of the proxy process; lower is better)"
