#!/usr/bin/env bash
# Issue 5 performance: equality look-up by SSN and bulk COPY through pgveil
# (clinic policy, ciphertext schema) against direct PostgreSQL on a
# plaintext copy of the same tables, in one run.
#
#   benches/search-copy-compare.sh [LOOKUP_ITERATIONS] [COPY_ROWS]
#
# 1. Look-up latency: `SELECT id, first_name, last_name, ssn FROM patients
#    WHERE ssn = $1` over 100,000 patients (ssn is UNIQUE, so indexed;
#    deterministic, so pgveil encrypts the parameter and PostgreSQL uses the
#    index on ciphertext), one client, prepared and extended protocol;
#    p50/p99 from pgbench's per-transaction log, interleaved runs. Also the
#    same look-up through pgveil without a policy (the hop alone).
# 2. COPY throughput: psql \copy of COPY_ROWS (default 1,000,000) patients
#    (5 protected text columns and a date) FROM a file, text format; rows
#    per second, interleaved direct/pgveil runs, and pgveil's RSS sampled
#    every 0.2 s during its copies (it must stay flat: rows stream through).
# No TLS; pgbench/psql, PostgreSQL and pgveil share the machine's cores.
set -euo pipefail
ITER=${1:-5000}
ROWS=${2:-1000000}
cd "$(dirname "$0")/.."
export PGBENCH_INIT=0
# shellcheck source=benches/common.sh
. benches/common.sh

# 100,000 patients with distinct SSNs, through pgveil and directly.
python3 - "$work/lookup.tsv" 100000 <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(f"First{i}\tLast{i}\t{i}\t19{i % 100:02d}-0{1 + i % 9}-1{i % 9}\n")
PY
cols="first_name, last_name, ssn, date_of_birth"
PSQL -p "$VEIL_PORT" -U postgres -d enc -c "\\copy patients ($cols) from '$work/lookup.tsv'"
PSQL -p "$PG_PORT" -U postgres -d plain -c "\\copy patients ($cols) from '$work/lookup.tsv'"
PSQL -p "$PG_PORT" -U postgres -d enc -c "VACUUM ANALYZE patients"
PSQL -p "$PG_PORT" -U postgres -d plain -c "VACUUM ANALYZE patients"
[ "$(PSQL -p "$PG_PORT" -U postgres -d enc -At -c "SELECT count(*) FROM patients WHERE ssn LIKE 'pgv1:%'")" = 100000 ] \
  || { echo "enc.patients does not hold ciphertext" >&2; exit 1; }
cat > "$work/lookup.sql" <<'SQL'
\set k random(0, 99999)
SELECT id, first_name, last_name, ssn FROM patients WHERE ssn = :k;
SQL
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"

echo "== look-up by SSN (UNIQUE index, 100,000 rows), 3 x $ITER iterations per target, interleaved, 1 client"
latency_table "$work/lookup.sql" 1.3 prepared extended
# The look-up used the index on ciphertext.
PSQL -p "$PG_PORT" -U postgres -d enc -At -c "EXPLAIN SELECT id FROM patients WHERE ssn = 'pgv1:x'" | grep -q "Index" \
  || { echo "no index scan on enc.patients.ssn" >&2; exit 1; }

echo
echo "== COPY $ROWS patients FROM a file (text format, 6 protected columns), 2 runs each, interleaved"
python3 - "$work/copy.tsv" "$ROWS" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(f"CopyFirst{i}\tLast\\t{i}\tC{i:09d}\t19{i % 100:02d}-0{1 + i % 9}-1{i % 9}\t+1-555-{i:07d}\tp{i}@example.org\t{i} Main Street, Springfield\n")
PY
[ "$(id -u)" = 0 ] && chown postgres: "$work/copy.tsv"
ccols="first_name, last_name, ssn, date_of_birth, phone, email, address"
copy_secs() { # port db [file] -> seconds
  PSQL -p "$1" -U postgres -d "$2" -c "TRUNCATE visits, patients CASCADE" >/dev/null 2>&1
  local t0 t1
  t0=$(date +%s.%N)
  PSQL -p "$1" -U postgres -d "$2" -c "\\copy patients ($ccols) from '${3:-$work/copy.tsv}'" >/dev/null
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$VEIL_PID/status"; }
d=0; n=0; v=0
rss_before=$(rss_kib)
: > "$work/rss"
for rep in 1 2; do
  d=$(python3 -c "print($d + $(copy_secs "$PG_PORT" plain))")
  n=$(python3 -c "print($n + $(copy_secs "$BARE_PORT" plain))")
  ( while kill -0 "$VEIL_PID" 2>/dev/null; do rss_kib >> "$work/rss"; sleep 0.2; done ) &
  sampler=$!
  v=$(python3 -c "print($v + $(copy_secs "$VEIL_PORT" enc))")
  kill "$sampler" 2>/dev/null || true
done
[ "$(PSQL -p "$PG_PORT" -U postgres -d enc -At -c "SELECT count(*) FROM patients WHERE address LIKE 'pgv1:%'")" = "$ROWS" ] \
  || { echo "enc.patients does not hold $ROWS ciphertext rows" >&2; exit 1; }
# What PostgreSQL alone needs to ingest the (larger) ciphertext rows.
PSQL -p "$PG_PORT" -U postgres -d enc -c "\\copy patients ($ccols) to '$work/cipher.tsv'" >/dev/null
c=$(copy_secs "$PG_PORT" enc "$work/cipher.tsv")
bytes_plain=$(stat -c %s "$work/copy.tsv"); bytes_cipher=$(stat -c %s "$work/cipher.tsv")
python3 - "$d" "$n" "$v" "$c" "$ROWS" "$rss_before" "$work/rss" "$bytes_plain" "$bytes_cipher" <<'PY'
import sys
d, n, v, c = (float(x) for x in sys.argv[1:5])
rows, before = int(sys.argv[5]), int(sys.argv[6])
rss = [int(l) for l in open(sys.argv[7]) if l.strip()]
bp, bc = int(sys.argv[8]), int(sys.argv[9])
print(f"direct_plain           {2 * rows / d:10.0f} rows/s  ({bp / 2**20:.0f} MiB of COPY text)")
print(f"pgveil_nopolicy_plain  {2 * rows / n:10.0f} rows/s  (the hop alone: {d / n:.2f}x)")
print(f"pgveil_encrypted       {2 * rows / v:10.0f} rows/s")
print(f"direct_ciphertext      {rows / c:10.0f} rows/s  (PostgreSQL ingesting the same rows already encrypted: {bc / 2**20:.0f} MiB, {d / 2 / c:.2f}x of plaintext)")
print(f"ratio pgveil/direct: {d / v:.2f}x  (target >= 0.5x); pgveil vs PostgreSQL's own ciphertext ingest: {c * 2 / v:.2f}x")
print(f"pgveil RSS: {before / 1024:.1f} MiB before; during the copies min {min(rss) / 1024:.1f}, "
      f"median {sorted(rss)[len(rss) // 2] / 1024:.1f}, max {max(rss) / 1024:.1f} MiB ({len(rss)} samples)")
PY
