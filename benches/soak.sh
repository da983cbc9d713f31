#!/usr/bin/env bash
# Soak: a mixed encrypted workload through pgveil for SECONDS, the proxy's
# RSS sampled every 10 s. Fails when memory keeps growing after warm-up:
# the highest sample of the last third may exceed the highest of the
# warm-up (first third) by at most max(4 MiB, 10%).
#
#   benches/soak.sh [SECONDS] [CLIENTS]     (default 600 s, 4 clients)
#
# Workload (pgbench, prepared and simple alternating per client): insert a
# patient with 5 protected values, look it up by SSN, read 20 patients'
# protected columns, update an address, delete old rows now and then; plus a
# COPY of 200 rows every 10 s.
set -euo pipefail
SECS=${1:-600}
CLIENTS=${2:-4}
cd "$(dirname "$0")/.."
PGBENCH_INIT=0
# shellcheck source=benches/common.sh
. benches/common.sh

# Values are pgbench variables (a parameter each in prepared mode, a literal
# in simple mode): expressions like 'S-' || :r are refused on protected
# columns, as they should be.
cat >"$work/mixed.sql" <<'SQL'
\set r random(1, 1000000000)
INSERT INTO patients (first_name, last_name, ssn, date_of_birth, address) VALUES (:r, 'Patient', :r, '1980-02-03', :r) ON CONFLICT (ssn) DO NOTHING;
SELECT first_name, last_name, date_of_birth FROM patients WHERE ssn = :r;
SELECT first_name, last_name, ssn, date_of_birth, address FROM patients ORDER BY id DESC LIMIT 20;
UPDATE patients SET address = :r WHERE ssn = :r;
SQL
cat >"$work/trim.sql" <<'SQL'
DELETE FROM patients WHERE id < (SELECT max(id) - 5000 FROM patients);
SQL

rss() { awk '/^VmRSS/{print $2}' "/proc/$VEIL_PID/status"; }
samples="$work/rss"
: >"$samples"
end=$((SECONDS + SECS))
half=$((CLIENTS / 2)); [ "$half" -ge 1 ] || half=1
(cd "$work" && as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$VEIL_PORT" -U postgres -n -c "$half" -j 1 -T "$SECS" \
   -M prepared -f mixed.sql@20 -f trim.sql@1 enc >"$work/pgbench1.out" 2>&1) &
B1=$!
(cd "$work" && as_pg "$bindir/pgbench" -h 127.0.0.1 -p "$VEIL_PORT" -U postgres -n -c "$((CLIENTS - half > 0 ? CLIENTS - half : 1))" -j 1 -T "$SECS" \
   -M simple -f mixed.sql@20 -f trim.sql@1 enc >"$work/pgbench2.out" 2>&1) &
B2=$!
k=0
while [ $SECONDS -lt "$end" ]; do
  sleep 10
  k=$((k + 1))
  python3 -c "
import sys
print('\n'.join(f'Copy{$k}_{i}\tPatient\tC-$k-{i}\t1990-01-0{1 + i % 9}' for i in range(200)))" \
    | PSQL -p "$VEIL_PORT" -U postgres -d enc -c "COPY patients (first_name, last_name, ssn, date_of_birth) FROM STDIN" \
    || { echo "COPY failed" >&2; exit 1; }
  r=$(rss)
  echo "$r" >>"$samples"
  printf 't=%4ds rss=%6d KiB\n' $((k * 10)) "$r"
done
wait $B1 $B2 || { cat "$work"/pgbench*.out >&2; exit 1; }
grep -h -E "number of transactions actually processed|number of failed" "$work"/pgbench*.out
python3 - "$samples" <<'PY'
import sys
s = [int(x) for x in open(sys.argv[1])]
if len(s) < 6:
    raise SystemExit("too few samples: run for at least 60 s")
third = len(s) // 3
warm, last = max(s[:third]), max(s[-third:])
allowed = max(4096, warm // 10)
verdict = "ok" if last - warm <= allowed else "GROWING"
print(f"soak: {len(s)} samples, warm-up max {warm} KiB, last-third max {last} KiB, growth {last - warm} KiB (allowed {allowed}): {verdict}")
sys.exit(0 if verdict == "ok" else 1)
PY
