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

# shellcheck source=benches/common.sh
. benches/common.sh

# 100 patients, written through pgveil (ciphertext) and directly (plaintext).
seed_patients "$VEIL_PORT" enc
seed_patients "$PG_PORT" plain
[ "$(PSQL -p "$PG_PORT" -U postgres -d enc -At -c "SELECT count(*) FROM patients WHERE ssn LIKE 'pgv1:%'")" = 100 ] \
  || { echo "enc.patients does not hold ciphertext" >&2; exit 1; }
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"

tps() { # port db mode script|-S clients secs
  local args
  if [ "$4" = "-S" ]; then args=(-S); else args=(-f "$4"); fi
  as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n "${args[@]}" -c "$5" -j 2 -T "$6" -M "$3" "$2" 2>&1 |
    awk '/^tps = /{print $3; exit}'
}

echo "== read: SELECT 100 rows x 4 protected columns, 3 x $ITER iterations per target (interleaved), 1 client"
latency_table "$work/select.sql" 1.3 prepared simple

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
