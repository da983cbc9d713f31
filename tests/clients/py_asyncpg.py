#!/usr/bin/env python3
"""asyncpg driver of the pgveil real-client tests (see README.md).

  py_asyncpg.py write <DATABASE_URL> <writer_tag> [--no-statement-cache]
  py_asyncpg.py read  <DATABASE_URL>              [--no-statement-cache]

asyncpg always prepares: it sends Parse without parameter types, asks the server
to Describe the statement, then binds every parameter and requests every result
column in binary format, encoded for the types the server described.
--no-statement-cache connects with statement_cache_size=0 (unnamed statements,
as used behind transaction-pooling proxies); by default statements are named
(__asyncpg_stmt_N__) and reused.

date, timestamp and timestamptz use tuple codecs (still binary on the wire):
asyncpg's default codecs would write date.min (0001-01-01) as '-infinity'.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgveil_clients as common  # noqa: E402

try:
    import asyncpg
except ImportError as e:  # pragma: no cover
    common.fail(f"py_asyncpg.py: asyncpg is not installed ({e}); run tests/clients/setup.sh", 3)


# asyncpg's own date/timestamp codecs turn date.min/date.max and
# datetime.min/datetime.max into -infinity/infinity (both ways), so 0001-01-01
# would be written as '-infinity'. These codecs keep asyncpg's binary wire format
# (days or microseconds since 2000-01-01) and map every value exactly.
_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_TZ = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)
_INFINITIES = (-(2**31), 2**31 - 1, -(2**63), 2**63 - 1)


def _finite(n: int, typename: str) -> int:
    if n in _INFINITIES:
        raise common.ClientError(f"the server sent {typename} +/-infinity, which the fixture never writes")
    return n


_CODECS = {
    "date": (
        lambda d: ((d - _PG_EPOCH_DATE).days,),
        lambda t: _PG_EPOCH_DATE + dt.timedelta(days=_finite(t[0], "date")),
    ),
    "timestamp": (
        lambda v: ((v - _PG_EPOCH) // _US,),
        lambda t: _PG_EPOCH + _finite(t[0], "timestamp") * _US,
    ),
    "timestamptz": (
        lambda v: ((v - _PG_EPOCH_TZ) // _US,),
        lambda t: _PG_EPOCH_TZ + _finite(t[0], "timestamptz") * _US,
    ),
}


async def connect(args) -> "asyncpg.Connection":
    kwargs = {}
    if args.no_statement_cache:
        kwargs["statement_cache_size"] = 0
    conn = await asyncpg.connect(args.url, **kwargs)
    for typename, (encoder, decoder) in _CODECS.items():
        await conn.set_type_codec(typename, schema="pg_catalog", encoder=encoder, decoder=decoder, format="tuple")
    return conn


def _oids(stmt) -> list:
    return [a.type.oid for a in stmt.get_attributes()]


async def write(args) -> None:
    fx = common.load_fixture()
    tag = common.check_tag(args.writer_tag)
    conn = await connect(args)
    patient_ids, lab_ids = [], []
    try:
        for op in common.write_plan(fx, tag):
            sql = op.sql(lambda i, t: f"${i}")
            params = [common.to_python(t, v) for (_, t), v in zip(op.columns, op.values)]
            if op.kind == "update":
                table_ids = lab_ids if op.table == "lab_results" else patient_ids
                params.append(table_ids[op.target])
                status = await conn.execute(sql, *params)
                if status != "UPDATE 1":
                    raise common.ClientError(f"UPDATE of {op.table} returned {status!r}, expected 'UPDATE 1'")
            elif op.kind == "select_ids":
                lab_ids = [r[0] for r in await conn.fetch(sql, *params)]
            elif op.returning == "id":
                patient_ids.append(await conn.fetchval(sql, *params))
            elif op.returning:
                stmt = await conn.prepare(sql)
                row = await stmt.fetchrow(*params)
                want_oids = [common.TYPE_OIDS[common.base_type(t)] for _, t in op.returning]
                if _oids(stmt) != want_oids:
                    raise common.ClientError(
                        f"RETURNING row description has type OIDs {_oids(stmt)}, expected {want_oids}"
                    )
                common.check_returning(op, list(row), lambda v: v)
            else:
                await conn.execute(sql, *params)
    finally:
        await conn.close()
    print(f"py_asyncpg: wrote writer {tag!r}", file=sys.stderr)


async def read(args) -> None:
    fx = common.load_fixture()
    conn = await connect(args)
    doc = {}
    try:
        for table in common.TABLES:
            stmt = await conn.prepare(common.select_sql(table))
            rows = await stmt.fetch()
            names = [a.name for a in stmt.get_attributes()]
            doc[table] = common.canonical_rows(fx, table, names, _oids(stmt), [tuple(r) for r in rows])
    finally:
        await conn.close()
    common.write_stdout(common.dump_document(doc))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="py_asyncpg.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("write", "read"):
        s = sub.add_parser(name)
        s.add_argument("url", metavar="DATABASE_URL")
        if name == "write":
            s.add_argument("writer_tag")
        s.add_argument("--no-statement-cache", action="store_true")
    args = p.parse_args(argv)
    try:
        asyncio.run({"write": write, "read": read}[args.command](args))
    except common.ClientError as e:
        common.fail(f"py_asyncpg {args.command}: {e}")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
        common.fail(f"py_asyncpg {args.command}: database error: {type(e).__name__}: {e}", 2)


if __name__ == "__main__":
    main()
