#!/usr/bin/env bash
# How long `pgveil guard install` blocks an application on a large table.
#
# Loads ROWS patients (default 1,000,000) through pgveil (COPY, encrypted),
# then runs a workload through pgveil (4 clients: look-up by id and insert,
# simple protocol) while `pgveil guard install` adds and validates the
# guards of every protected column. Reports the workload's latency before
# and during the install, the longest single transaction during it, and how
# long the install took. Target (issue 11): no lock blocks the workload for
# more than 100 ms.
#
#   benches/guard-lock.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
PGBENCH_INIT=0
# shellcheck source=benches/common.sh
source benches/common.sh

echo "loading $ROWS patients through pgveil (COPY, encrypted)"
python3 -c "
import sys
w = sys.stdout.write
for i in range($ROWS):
    w(f'First{i}\tLast{i}\t{i:09d}\t2000-01-01\n')
" | as_pg "$bindir/psql" -X -q -h 127.0.0.1 -p "$VEIL_PORT" -U postgres -d enc \
    -c "\\copy patients (first_name, last_name, ssn, date_of_birth) FROM STDIN"
PSQL -p "$PG_PORT" -U postgres -d enc -c "VACUUM ANALYZE patients"
as_pg "$bindir/psql" -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d enc \
  -c "SELECT 'table size: ' || pg_size_pretty(pg_total_relation_size('patients'))"

cat > "$work/workload.sql" <<SQL
\set id random(1, $ROWS)
SELECT first_name, ssn FROM patients WHERE id = :id;
INSERT INTO patients (first_name, last_name, ssn) VALUES ('bench', 'guard', NULL);
SQL
rm -f "$work"/wl_log.*
(cd "$work" && as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$VEIL_PORT" -U postgres -n -c 4 -j 1 -T 40 \
   -f "$work/workload.sql" -l --log-prefix="$work/wl_log" enc >"$work/wl.out" 2>&1) &
WL=$!
sleep 8
t0=$(date +%s.%N)
"$PGVEIL" guard install --config "$work/pgveil.toml" \
  --database "postgres://postgres@127.0.0.1:$PG_PORT/enc?sslmode=disable" > "$work/guard.out"
t1=$(date +%s.%N)
wait $WL
cat "$work/guard.out" | sed 's/^/  /'
grep -E "number of (transactions actually processed|failed)" "$work/wl.out" | sed 's/^/  workload: /'
python3 - "$t0" "$t1" "$work" <<'PY'
import glob, sys
t0, t1, work = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
before, during = [], []
for f in glob.glob(f"{work}/wl_log.*"):
    for line in open(f):
        p = line.split()
        lat_us, end = int(p[2]), int(p[4]) + int(p[5]) / 1e6
        start = end - lat_us / 1e6
        if end < t0:
            before.append(lat_us)
        elif start < t1:
            during.append(lat_us)
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] / 1000 if v else float("nan")
print(f"guard install took {t1 - t0:.1f} s")
print(f"workload before: {len(before)} txns, p50 {q(before, .5):.2f} ms, p99 {q(before, .99):.2f} ms, max {max(before) / 1000:.1f} ms")
print(f"workload during: {len(during)} txns, p50 {q(during, .5):.2f} ms, p99 {q(during, .99):.2f} ms, max {max(during) / 1000:.1f} ms")
print(f"longest transaction during the install: {max(during) / 1000:.1f} ms (target: no lock blocks the workload > 100 ms)")
PY
