#!/usr/bin/env python3
"""psycopg 3 driver of the pgveil real-client tests (see README.md).

  py_psycopg.py write <DATABASE_URL> <writer_tag> [--format text|binary] [--params auto|text|binary] [--prepare]
  py_psycopg.py read  <DATABASE_URL>              [--format text|binary] [--prepare]
  py_psycopg.py check <DATABASE_URL> <writer_tag> [--format text|binary] [--prepare]

--format text   results in text format; parameters with %s placeholders (psycopg
                picks per value: text for everything but bytes, which go binary)
--format binary cursor(binary=True) and %b placeholders (every parameter binary)
--params        overrides the placeholder: auto (%s), text (%t), binary (%b)
--prepare       execute(..., prepare=True): named server-side prepared statements;
                without it prepare=False (unnamed statements only; psycopg would
                otherwise prepare a query by itself from its 5th execution)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgveil_clients as common  # noqa: E402

try:
    import psycopg
    from psycopg.types.json import Json, Jsonb, set_json_loads
except ImportError as e:  # pragma: no cover
    common.fail(f"py_psycopg.py: psycopg is not installed ({e}); run tests/clients/setup.sh", 3)

PLACEHOLDERS = {"auto": "%s", "text": "%t", "binary": "%b"}


def _raw_json(data):
    """JSON columns come back as their text, untouched (numbers and order kept)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("utf-8")
    return data


def _identity(s):
    return s


def connect(url: str) -> "psycopg.Connection":
    conn = psycopg.connect(url)
    set_json_loads(_raw_json, conn)
    return conn


def bind_value(logical: str, value):
    """Fixture string -> what psycopg binds. json/jsonb: the text itself, sent as is."""
    if value is None:
        return None
    t = common.base_type(logical)
    if t == "json":
        return Json(value, dumps=_identity)
    if t == "jsonb":
        return Jsonb(value, dumps=_identity)
    return common.to_python(logical, value)


def _oids(cur) -> list:
    return [c.type_code for c in cur.description]


def write(args) -> None:
    fx = common.load_fixture()
    tag = common.check_tag(args.writer_tag)
    mark = PLACEHOLDERS[args.params or ("binary" if args.format == "binary" else "auto")]
    prepare = True if args.prepare else False
    binary = args.format == "binary"
    patient_ids, lab_ids = [], []
    with connect(args.url) as conn:
        cur = conn.cursor(binary=binary)
        for op in common.write_plan(fx, tag):
            sql = op.sql(lambda i, t: mark)
            params = [bind_value(t, v) for (_, t), v in zip(op.columns, op.values)]
            if op.kind == "update":
                table_ids = lab_ids if op.table == "lab_results" else patient_ids
                params.append(table_ids[op.target])
            cur.execute(sql, params, prepare=prepare)
            if op.kind == "select_ids":
                lab_ids = [r[0] for r in cur.fetchall()]
            elif op.kind == "update" and cur.rowcount != 1:
                raise common.ClientError(f"UPDATE of {op.table} changed {cur.rowcount} rows, expected 1")
            elif op.returning == "id":
                patient_ids.append(cur.fetchone()[0])
            elif op.returning:
                row = cur.fetchone()
                want_oids = [common.TYPE_OIDS[common.base_type(t)] for _, t in op.returning]
                if _oids(cur) != want_oids:
                    raise common.ClientError(
                        f"RETURNING row description has type OIDs {_oids(cur)}, expected {want_oids}"
                    )
                common.check_returning(op, list(row), _raw_json)
        conn.commit()
    print(f"py_psycopg: wrote writer {tag!r} (format {args.format}, placeholders {mark}, prepare={prepare})",
          file=sys.stderr)


def read_document(args):
    """(canonical document, raw json texts) of both tables."""
    fx = common.load_fixture()
    doc, raw = {}, {}
    with connect(args.url) as conn:
        cur = conn.cursor(binary=args.format == "binary")
        for table in common.TABLES:
            cur.execute(common.select_sql(table), prepare=True if args.prepare else False)
            rows = cur.fetchall()
            names = [c.name for c in cur.description]
            doc[table] = common.canonical_rows(fx, table, names, _oids(cur), rows)
            raw[table] = common.raw_json_rows(fx, table, names, rows)
        conn.rollback()
    return fx, doc, raw


def read(args) -> None:
    _, doc, _ = read_document(args)
    common.write_stdout(common.dump_document(doc))


def check(args) -> None:
    tag = common.check_tag(args.writer_tag)
    fx, doc, raw = read_document(args)
    problems = common.compare_writer(fx, tag, doc, raw)
    if problems:
        common.fail(f"py_psycopg check: rows of writer {tag!r} differ from the fixture:\n" + "\n".join(problems))
    n = {t: len(common.rows_of_writer(t, doc[t], tag)) for t in common.TABLES}
    print(f"py_psycopg check: writer {tag!r} OK ({n['lab_results']} lab_results, {n['patients']} patients)",
          file=sys.stderr)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="py_psycopg.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("write", "read", "check"):
        s = sub.add_parser(name)
        s.add_argument("url", metavar="DATABASE_URL")
        if name != "read":
            s.add_argument("writer_tag")
        s.add_argument("--format", choices=("text", "binary"), default="text")
        s.add_argument("--prepare", action="store_true")
        if name == "write":
            s.add_argument("--params", choices=tuple(PLACEHOLDERS))
    args = p.parse_args(argv)
    try:
        {"write": write, "read": read, "check": check}[args.command](args)
    except common.ClientError as e:
        common.fail(f"py_psycopg {args.command}: {e}")
    except psycopg.Error as e:
        common.fail(f"py_psycopg {args.command}: database error: {type(e).__name__}: {e}", 2)


if __name__ == "__main__":
    main()
