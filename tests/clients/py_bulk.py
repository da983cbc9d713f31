#!/usr/bin/env python3
"""The drivers' bulk-load idioms on public.patients (see README.md).

  py_bulk.py <DATABASE_URL> <tag>

Each idiom writes its own rows (first names `CANARY<tag>-<idiom>-<i>`):

- asyncpg   copy_records_to_table: 1,000 rows as one binary COPY, in the
            types asyncpg introspected (`SELECT cols FROM patients LIMIT 1`)
- asyncpg   executemany: 200 rows, one pipeline of Bind/Execute
- psycopg 3 cursor.copy() in binary with set_types: 200 rows
- psycopg 3 executemany: 200 rows (pipeline mode)
- SQLAlchemy (psycopg 3) insert().returning() without sort_by_parameter_order:
            200 rows in one multi-row VALUES ... RETURNING
- SQLAlchemy (asyncpg dialect) insert().returning(sort_by_parameter_order=True):
            200 rows in the sentinel form (SELECT ... FROM (VALUES ...) AS
            imp_sen(...) ORDER BY sen_counter)
- psycopg 3 INSERT ... SELECT * FROM unnest($1::text[], ...) written by
            hand: 200 rows, arrays bound as binary parameters

Then every row written is read back through asyncpg and compared field by
field, and each idiom's rows are counted. stdout: `ok` and a summary. Exit 1
when a result differs, 2 on a database error, 3 when a package is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgveil_clients as common  # noqa: E402

try:
    import asyncpg
    import psycopg
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine
except ImportError as e:  # pragma: no cover
    common.fail(f"py_bulk.py: a driver is not installed ({e}); run tests/clients/setup.sh", 3)

COLUMNS = ["first_name", "last_name", "ssn", "date_of_birth", "phone", "email", "address", "medical_history"]


def person(tag: str, idiom: str, i: int) -> tuple:
    return (
        f"CANARY{tag}-{idiom}-{i}",
        f"O'Brien {i}\t\"Zoë\"",
        None if i % 10 == 0 else f"{tag}-{idiom}-{i:06d}",
        None if i % 3 == 0 else dt.date(1940, 1, 1) + dt.timedelta(days=i * 11),
        f"+1 555 {i:07d}",
        f"canary.{tag}.{idiom}.{i}@example.org",
        None if i % 4 == 0 else f"{i} Main St\n{{Apt}} \\{i}",
        None if i % 2 else f"CANARY{tag} history {i} 🩺",
    )


def sa_table(metadata):
    return sa.Table(
        "patients",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("first_name", sa.Text, nullable=False),
        sa.Column("last_name", sa.Text, nullable=False),
        sa.Column("ssn", sa.Text),
        sa.Column("date_of_birth", sa.Date),
        sa.Column("phone", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("address", sa.Text),
        sa.Column("medical_history", sa.Text),
    )


def with_scheme(url: str, scheme: str) -> str:
    u = urlparse(url)
    if scheme.endswith("+asyncpg"):
        # The asyncpg dialect passes query arguments to asyncpg.connect(),
        # which calls sslmode `ssl`.
        u = u._replace(query=u.query.replace("sslmode=", "ssl="))
    return urlunparse(u._replace(scheme=scheme))


async def run(url: str, tag: str) -> str:
    written: dict = {}

    def rows(idiom: str, n: int) -> list:
        out = [person(tag, idiom, i) for i in range(n)]
        for r in out:
            written[r[0]] = r
        return out

    # asyncpg: binary COPY and executemany.
    con = await asyncpg.connect(url)
    try:
        await con.copy_records_to_table("patients", records=rows("copyrec", 1000), columns=COLUMNS)
        await con.executemany(
            f"INSERT INTO patients ({', '.join(COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            rows("apgmany", 200),
        )
    finally:
        await con.close()

    # psycopg 3: binary COPY with declared types, executemany, unnest by hand.
    with psycopg.connect(url, autocommit=True) as pcon:
        with pcon.cursor() as cur:
            with cur.copy(f"COPY patients ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "text", "date", "text", "text", "text", "text"])
                for r in rows("pgcopy", 200):
                    copy.write_row(r)
            cur.executemany(
                f"INSERT INTO patients ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows("pgmany", 200),
            )
            batch = rows("unnest", 200)
            cur.execute(
                f"INSERT INTO patients ({', '.join(COLUMNS)}) SELECT * FROM unnest("
                "%s::text[], %s::text[], %s::text[], %s::date[], %s::text[], %s::text[], %s::text[], %s::text[])",
                [list(col) for col in zip(*batch)],
                binary=True,
            )

    # SQLAlchemy: multi-row VALUES with RETURNING (psycopg dialect) and the
    # sentinel form (asyncpg dialect).
    md = sa.MetaData()
    t = sa_table(md)
    engine = sa.create_engine(with_scheme(url, "postgresql+psycopg"))
    with engine.begin() as c:
        batch = [dict(zip(COLUMNS, r)) for r in rows("sareturn", 200)]
        got = c.execute(sa.insert(t).returning(t.c.id, t.c.first_name), batch).all()
        if sorted(g.first_name for g in got) != sorted(b["first_name"] for b in batch):
            common.fail("SQLAlchemy RETURNING rows differ")
    engine.dispose()
    aengine = create_async_engine(with_scheme(url, "postgresql+asyncpg"))
    async with aengine.begin() as c:
        batch = [dict(zip(COLUMNS, r)) for r in rows("saasync", 200)]
        res = await c.execute(
            sa.insert(t).returning(t.c.id, t.c.ssn, sort_by_parameter_order=True), batch
        )
        got = res.all()
        if [g.ssn for g in got] != [b["ssn"] for b in batch]:
            common.fail("SQLAlchemy sentinel RETURNING out of order or different")
    await aengine.dispose()

    # Everything written reads back equal.
    con = await asyncpg.connect(url)
    try:
        got = await con.fetch(
            f"SELECT {', '.join(COLUMNS)} FROM patients WHERE id > 0"
        )
    finally:
        await con.close()
    have = {tuple(r)[0]: tuple(r) for r in got if tuple(r)[0].startswith(f"CANARY{tag}-")}
    if len(have) != len(written):
        common.fail(f"{len(have)} rows read back where {len(written)} were written")
    for first, want in written.items():
        if have.get(first) != want:
            diff = [c for c, a, b in zip(COLUMNS, want, have.get(first, ())) if a != b]
            common.fail(f"row {first.split('-', 1)[1]} differs in {diff or 'presence'}")
    return f"ok: {len(written)} rows through 7 bulk idioms read back equal\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("tag")
    a = ap.parse_args()
    tag = common.check_tag(a.tag)
    try:
        out = asyncio.run(run(a.url, tag))
    except (asyncpg.PostgresError, psycopg.Error, sa.exc.DBAPIError) as e:
        common.fail(f"database error: {type(e).__name__}: {e}", 2)
    common.write_stdout(out)


if __name__ == "__main__":
    main()
