#!/usr/bin/env python3
"""Masked reads through a real driver's normal type adaptation.

  py_masks.py <DATABASE_URL>

Reads `SELECT ssn, first_name, date_of_birth, email FROM patients ORDER BY id`
with psycopg 3 (text results, then binary results) and asyncpg (binary,
prepared), as whatever role the URL logs in as, and prints one JSON document:
{"psycopg_text": rows, "psycopg_binary": rows, "asyncpg": rows}, each value
as the driver adapted it: strings as is, dates as "date:<isoformat>" (so a
masked date that came back as anything but a Python date shows), None as
null. Exit 1 if a driver fails.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys

sys.dont_write_bytecode = True

QUERY = "SELECT ssn, first_name, date_of_birth, email FROM patients ORDER BY id"


def adapt(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dt.date):
        return "date:" + v.isoformat()
    return f"{type(v).__name__}:{v!r}"


def psycopg_rows(url: str, binary: bool):
    import psycopg

    with psycopg.connect(url) as conn:
        with conn.cursor(binary=binary) as cur:
            cur.execute(QUERY)
            return [[adapt(v) for v in row] for row in cur.fetchall()]


async def asyncpg_rows(url: str):
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        stmt = await conn.prepare(QUERY)
        return [[adapt(v) for v in row] for row in await stmt.fetch()]
    finally:
        await conn.close()


def main() -> int:
    url = sys.argv[1]
    out = {
        "psycopg_text": psycopg_rows(url, False),
        "psycopg_binary": psycopg_rows(url, True),
        "asyncpg": asyncio.run(asyncpg_rows(url)),
    }
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
