"""A minimal PostgreSQL wire client for the benchmark scripts: no driver,
so what is measured is pgveil, not a client library. Trust auth only.

    import rawpg
    s = rawpg.connect(port, "postgres", tls=False)
    rows, data_bytes = rawpg.query(s, "SELECT 1")
"""
import socket
import ssl
import struct


def _until_ready(s):
    """Reads to ReadyForQuery; returns (DataRows, their bytes). Exits on an
    ErrorResponse or a closed connection."""
    buf = bytearray()
    rows = total = 0
    while True:
        while len(buf) >= 5:
            tag = buf[0]
            ln = struct.unpack("!i", bytes(buf[1:5]))[0]
            if len(buf) < 1 + ln:
                break
            if tag == ord("E"):
                raise SystemExit(f"server error: {bytes(buf[5:1 + ln][:200])!r}")
            if tag == ord("D"):
                rows += 1
                total += ln
            del buf[:1 + ln]
            if tag == ord("Z"):
                return rows, total
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk


def connect(port, database, tls=False, user="postgres"):
    s = socket.create_connection(("127.0.0.1", port))
    if tls:
        s.sendall(struct.pack("!ii", 8, 80877103))
        if s.recv(1) != b"S":
            raise SystemExit("TLS refused")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    _until_ready(s)
    return s


def query(s, sql):
    """Runs one simple query; returns (DataRows, their bytes)."""
    body = sql.encode() + b"\0"
    s.sendall(b"Q" + struct.pack("!i", 4 + len(body)) + body)
    return _until_ready(s)
