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
python3 - "$VEIL_PORT" "$MIB" <<'PY'
import socket, struct, sys
port, mib = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
params = b"user\0postgres\0database\0enc\0\0"
s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
def until_ready():
    buf = b""
    while True:
        while len(buf) >= 5:
            tag, ln = buf[:1], struct.unpack("!i", buf[1:5])[0]
            if len(buf) < 1 + ln:
                break
            if tag == b"E":
                raise SystemExit(f"error: {buf[5:1+ln][:200]!r}")
            buf = buf[1 + ln:]
            if tag == b"Z":
                return
        buf += s.recv(1 << 20)
until_ready()
note = ("clinical note " * (mib * 1024 * 1024 // 14 + 1))[: mib * 1024 * 1024]
sql = f"INSERT INTO patients (first_name, last_name, medical_history) VALUES ('Big', 'Note', '{note}')\0"
s.sendall(b"Q" + struct.pack("!i", 4 + len(sql)) + sql.encode())
until_ready()
PY
PSQL -p "$PG_PORT" -U postgres -d enc -c \
  "INSERT INTO patients (first_name, last_name, medical_history) SELECT first_name, last_name, medical_history FROM patients, generate_series(2, $ROWS)"

rss() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$VEIL_PID/status"; }
# Reset the peak-RSS counter (VmHWM) so the peak is this stream's.
echo 5 >"/proc/$VEIL_PID/clear_refs" 2>/dev/null || true
before=$(rss VmRSS)
started=$SECONDS
python3 - "$VEIL_PORT" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
params = b"user\0postgres\0database\0enc\0\0"
s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
def drain(count_rows):
    buf = bytearray(); rows = 0; total = 0
    while True:
        while len(buf) >= 5:
            tag = buf[0]; ln = struct.unpack("!i", bytes(buf[1:5]))[0]
            if len(buf) < 1 + ln:
                break
            if tag == ord("E"):
                raise SystemExit(f"error: {bytes(buf[5:1+ln][:200])!r}")
            if tag == ord("D"):
                rows += 1; total += ln
            del buf[:1 + ln]
            if tag == ord("Z"):
                return rows, total
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("closed")
        buf += chunk
drain(False)
sql = b"SELECT medical_history FROM patients\0"
s.sendall(b"Q" + struct.pack("!i", 4 + len(sql)) + sql)
rows, total = drain(True)
print(f"read {rows} rows, {total / 2**20:.0f} MiB of decrypted DataRows")
PY
after=$(rss VmRSS); peak=$(rss VmHWM)
echo "pgveil RSS before ${before} KiB, after ${after} KiB, peak ${peak} KiB: growth $(( (peak - before) / 1024 )) MiB over the stream ($((SECONDS - started)) s)"
