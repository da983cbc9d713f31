#!/usr/bin/env bash
# Streaming a large result through a protected column in constant memory:
# ROWS rows of a MIB-MiB protected `medical_history` (bytea ciphertext) are
# read through pgveil by a client that reads and discards; the proxy's peak
# RSS (VmHWM) is compared with its RSS before the query.
#
#   benches/stream-memory.sh [ROWS] [MIB]      (default 1024 rows x 1 MiB = 1 GiB)
set -euo pipefail
ROWS=${1:-1024}
MIB=${2:-1}
cd "$(dirname "$0")/.."
PGBENCH_INIT=0
# shellcheck source=benches/common.sh
. benches/common.sh

# One value written through pgveil (so it is ciphertext under the column's
# key), then copied row by row inside PostgreSQL: every copy decrypts.
PYTHONPATH=benches python3 - "$VEIL_PORT" "$MIB" <<'PY'
import sys
import rawpg
port, mib = int(sys.argv[1]), int(sys.argv[2])
s = rawpg.connect(port, "enc")
note = ("clinical note " * (mib * 1024 * 1024 // 14 + 1))[: mib * 1024 * 1024]
rawpg.query(s, f"INSERT INTO patients (first_name, last_name, medical_history) VALUES ('Big', 'Note', '{note}')")
PY
PSQL -p "$PG_PORT" -U postgres -d enc -c \
  "INSERT INTO patients (first_name, last_name, medical_history) SELECT first_name, last_name, medical_history FROM patients, generate_series(2, $ROWS)"

rss() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$VEIL_PID/status"; }
# Reset the peak-RSS counter (VmHWM) so the peak is this stream's.
echo 5 >"/proc/$VEIL_PID/clear_refs" 2>/dev/null || true
before=$(rss VmRSS)
started=$SECONDS
PYTHONPATH=benches python3 - "$VEIL_PORT" <<'PY'
import sys
import rawpg
s = rawpg.connect(int(sys.argv[1]), "enc")
rows, total = rawpg.query(s, "SELECT medical_history FROM patients")
print(f"read {rows} rows, {total / 2**20:.0f} MiB of decrypted DataRows")
PY
after=$(rss VmRSS); peak=$(rss VmHWM)
echo "pgveil RSS before ${before} KiB, after ${after} KiB, peak ${peak} KiB: growth $(( (peak - before) / 1024 )) MiB over the stream ($((SECONDS - started)) s)"
