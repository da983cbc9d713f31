#!/usr/bin/env python3
"""Equality look-ups by SSN through a real driver (see README.md).

  py_lookup.py {psycopg|asyncpg} <DATABASE_URL> <tag>

patients.ssn is the clinic's deterministic column: pgveil lets an application
search it for equality. This driver inserts 20 patients of its own (18 with an
SSN, 2 without), then runs the equality forms an application uses, every value
a bound parameter ($n with asyncpg, %s with psycopg):

  ssn = $1, ssn <> $1, ssn IN ($1, $2, $3), ssn = ANY($1) (a text[] parameter),
  ssn IS NULL / IS NOT NULL, GROUP BY ssn, DISTINCT ssn, count(DISTINCT ssn),
  a self-join on ssn, INSERT ... ON CONFLICT (ssn) DO UPDATE (both branches),
  and two forms with SQL literals instead of parameters (ssn = '...',
  ssn IN ('...', '...')). psycopg sends those as a simple Query; asyncpg sends
  them in Parse (it always uses the extended protocol).

The other patients columns are randomized under pgveil and cannot be searched,
so the forms that must see only this run's rows add `id = ANY($n)` with the
ids the INSERTs returned. Nothing is ordered by ssn (pgveil refuses that):
results are sorted here. Every result is compared with what the inserted rows
imply (exit 1 on a difference). Everything runs in one transaction, committed
at the end.

stdout: one JSON document, one key per form (sorted), the rows of each form
sorted, every value a string (SQL NULL is null). Ids are left out, and the tag
is written as {tag}, so the document is byte-identical for both drivers, for
any tag, against pgveil and against a plain PostgreSQL with the logical schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgveil_clients as common  # noqa: E402

NULL_SSN_AT = (6, 13)  # patients 6 and 13 have no SSN


# --------------------------------------------------------------------------
# The rows and the forms (driver-independent)


def make_patients(tag: str) -> list:
    """20 patients: (first_name, last_name, ssn)."""
    rows = []
    for i in range(1, 21):
        ssn = None if i in NULL_SSN_AT else f"CANARY-{tag}-123-45-67{i:02d}"
        rows.append((f"CANARY-{tag}-first-{i:02d}", f"CANARY-{tag}-last-{i:02d}", ssn))
    return rows


class Form:
    """One statement: its SQL (with $n placeholders), parameters and expected rows."""

    def __init__(self, name: str, sql: str, params: list, expect: list):
        self.name, self.sql, self.params, self.expect = name, sql, params, expect


def make_forms(tag: str, patients: list, ids: list) -> list:
    """Every form, in the order they run. `ids` are this run's patient ids."""
    cols = "SELECT first_name, last_name, ssn FROM public.patients"
    ssn = [p[2] for p in patients]  # ssn[i - 1] is patient i's SSN
    missing = f"CANARY-{tag}-000-00-0000"
    with_ssn = [p for p in patients if p[2] is not None]
    without_ssn = [p for p in patients if p[2] is None]

    def having(*ssns):
        return [p for p in patients if p[2] in ssns]

    forms = [
        Form("eq", f"{cols} WHERE ssn = $1", [ssn[4]], having(ssn[4])),
        Form("eq_missing", f"{cols} WHERE ssn = $1", [missing], []),
        Form("ne", f"{cols} WHERE ssn <> $1 AND id = ANY($2)", [ssn[4], ids],
             [p for p in with_ssn if p[2] != ssn[4]]),
        Form("in", f"{cols} WHERE ssn IN ($1, $2, $3)", [ssn[1], ssn[8], missing], having(ssn[1], ssn[8])),
        Form("any", f"{cols} WHERE ssn = ANY($1)", [[ssn[0], ssn[2], ssn[14], missing]],
             having(ssn[0], ssn[2], ssn[14])),
        Form("is_null", f"{cols} WHERE ssn IS NULL AND id = ANY($1)", [ids], without_ssn),
        Form("is_not_null", f"{cols} WHERE ssn IS NOT NULL AND id = ANY($1)", [ids], with_ssn),
        Form("group_by", "SELECT ssn, count(*) FROM public.patients WHERE id = ANY($1) GROUP BY ssn", [ids],
             [(p[2], 1) for p in with_ssn] + [(None, len(without_ssn))]),
        Form("distinct", "SELECT DISTINCT ssn FROM public.patients WHERE id = ANY($1)", [ids],
             [(p[2],) for p in with_ssn] + [(None,)]),
        Form("count_distinct", "SELECT count(DISTINCT ssn) FROM public.patients WHERE id = ANY($1)", [ids],
             [(len(with_ssn),)]),
        Form("self_join",
             "SELECT a.first_name, b.last_name, b.ssn FROM public.patients a"
             " JOIN public.patients b ON a.ssn = b.ssn WHERE a.id = ANY($1)", [ids], with_ssn),
        # SQL literals, no parameters. The tag is [A-Za-z0-9_-], so quoting is safe.
        Form("literal_eq", f"{cols} WHERE ssn = '{ssn[7]}'", [], having(ssn[7])),
        Form("literal_in", f"{cols} WHERE ssn IN ('{ssn[9]}', '{ssn[10]}', '{missing}')", [],
             having(ssn[9], ssn[10])),
    ]

    # INSERT ... ON CONFLICT (ssn) DO UPDATE: once on an existing SSN (the
    # update branch keeps first_name and takes the new last_name), once on a
    # new SSN (the insert branch); each followed by a read-back by SSN.
    upsert = ("INSERT INTO public.patients (first_name, last_name, ssn) VALUES ($1, $2, $3)"
              " ON CONFLICT (ssn) DO UPDATE SET last_name = EXCLUDED.last_name"
              " RETURNING first_name, last_name, ssn")
    existing = patients[6]
    updated = (existing[0], f"CANARY-{tag}-last-07-upserted", existing[2])
    new = (f"CANARY-{tag}-first-21", f"CANARY-{tag}-last-21", f"CANARY-{tag}-123-45-6721")
    forms += [
        Form("upsert_update", upsert, [f"CANARY-{tag}-first-ignored", updated[1], existing[2]], [updated]),
        Form("upsert_update_read", f"{cols} WHERE ssn = $1", [existing[2]], [updated]),
        Form("upsert_insert", upsert, list(new), [new]),
        Form("upsert_insert_read", f"{cols} WHERE ssn = $1", [new[2]], [new]),
    ]
    return forms


INSERT_SQL = "INSERT INTO public.patients (first_name, last_name, ssn) VALUES ($1, $2, $3) RETURNING id, ssn"


# --------------------------------------------------------------------------
# Canonical form and the output document


def canonical_row(row, where: str) -> list:
    """str stays, int (counts) becomes its decimal text, NULL stays None."""
    out = []
    for v in row:
        if v is None or isinstance(v, str):
            out.append(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise common.ClientError(f"{where}: unexpected {type(v).__name__} value {v!r}")
    return out


def sorted_rows(rows: list, where: str) -> list:
    canon = [canonical_row(r, where) for r in rows]
    return sorted(canon, key=lambda r: json.dumps(r, ensure_ascii=False))


def dump(doc: dict, tag: str) -> str:
    """One form per key (sorted), one row per line, no spaces; the tag written as {tag}."""
    parts = []
    for name in sorted(doc):
        rows = ",".join("\n" + json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in doc[name])
        parts.append(f'\n"{name}":[{rows}\n]')
    return ("{" + ",".join(parts) + "\n}\n").replace(f"CANARY-{tag}-", "CANARY-{tag}-")


def check_inserts(patients: list, returned: list) -> list:
    """RETURNING id, ssn of each INSERT -> the ids; the ssn must be what was sent."""
    for (first, _, ssn), (_, got) in zip(patients, returned):
        if got != ssn:
            raise common.ClientError(f"INSERT of {first} RETURNING ssn gave {got!r}, sent {ssn!r}")
    return [row_id for row_id, _ in returned]


def document(forms: list, results: list) -> dict:
    """Checks each form's rows against its expectation; returns the output document."""
    doc, problems = {}, []
    for form, rows in zip(forms, results):
        have = sorted_rows(rows, form.name)
        want = sorted_rows(form.expect, form.name + " (expected)")
        if have != want:
            problems.append(f"  {form.name}: {form.sql}\n    expected {want}\n    got      {have}")
        doc[form.name] = have
    if problems:
        raise common.ClientError("look-ups gave unexpected rows:\n" + "\n".join(problems))
    return doc


# --------------------------------------------------------------------------
# Drivers


def to_psycopg(sql: str, params: list):
    """$n placeholders -> %s, with the parameters in order of appearance."""
    order = [int(n) - 1 for n in re.findall(r"\$(\d+)", sql)]
    return re.sub(r"\$\d+", "%s", sql), [params[i] for i in order]


def with_psycopg(url: str, tag: str) -> dict:
    import psycopg

    patients = make_patients(tag)
    with psycopg.connect(url) as conn:  # one transaction, committed when the block ends
        cur = conn.cursor()

        def fetch(sql, params):
            sql, params = to_psycopg(sql, params)
            cur.execute(sql, params or None)  # without parameters psycopg sends a simple Query
            return cur.fetchall()

        ids = check_inserts(patients, [fetch(INSERT_SQL, list(p))[0] for p in patients])
        forms = make_forms(tag, patients, ids)
        return document(forms, [fetch(f.sql, f.params) for f in forms])


async def with_asyncpg(url: str, tag: str) -> dict:
    import asyncpg

    patients = make_patients(tag)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            ids = check_inserts(patients, [tuple(await conn.fetchrow(INSERT_SQL, *p)) for p in patients])
            forms = make_forms(tag, patients, ids)
            results = [[tuple(r) for r in await conn.fetch(f.sql, *f.params)] for f in forms]
            return document(forms, results)
    finally:
        await conn.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="py_lookup.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("driver", choices=("psycopg", "asyncpg"))
    p.add_argument("url", metavar="DATABASE_URL")
    p.add_argument("tag")
    args = p.parse_args(argv)
    try:
        if args.driver == "psycopg":
            import psycopg as driver
            db_errors = (driver.Error, OSError)
        else:
            import asyncpg as driver
            db_errors = (driver.PostgresError, driver.InterfaceError, OSError)
    except ImportError as e:
        common.fail(f"py_lookup.py: {args.driver} is not installed ({e}); run tests/clients/setup.sh", 3)
    try:
        tag = common.check_tag(args.tag)
        if args.driver == "psycopg":
            doc = with_psycopg(args.url, tag)
        else:
            doc = asyncio.run(with_asyncpg(args.url, tag))
    except common.ClientError as e:
        common.fail(f"py_lookup {args.driver}: {e}")
    except db_errors as e:
        common.fail(f"py_lookup {args.driver}: database error: {type(e).__name__}: {e}", 2)
    common.write_stdout(dump(doc, tag))
    print(f"py_lookup {args.driver}: {len(doc)} look-up forms OK for tag {tag!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
