#!/usr/bin/env python3
"""SQLAlchemy 2.0 Core and ORM CRUD on public.patients (see README.md).

  py_sqlalchemy.py <DATABASE_URL> <tag>

DATABASE_URL is a postgresql:// URL; it is used with SQLAlchemy's psycopg 3
dialect (postgresql+psycopg://). The table is declared with the logical types
the application sees (date_of_birth a date, medical_history text): nothing is
reflected and nothing is created.

Core (one transaction):  insert one row with RETURNING id; insert 200 rows with
  one execute() and a list of dicts (psycopg executemany); insert 200 more
  with RETURNING (SQLAlchemy's "insertmanyvalues" batches); select each row by
  ssn (patients.c.ssn == x) and by ssn IN (...); update by ssn; delete by ssn
  and by ssn IN (...).
ORM (a mapped class Patient): Session.add + commit; select(Patient).where(
  Patient.ssn == x); change attributes + commit (UPDATE ... WHERE id); add_all
  of 200 objects + commit; session.delete + commit; delete(Patient).where(
  Patient.ssn == x); counts by ssn IN (...).

Every value carries CANARY and the tag. SQL never orders by ssn. stdout: `ok`
and a summary. Exit 1 when a result differs from what was written, 2 on a
database or connection error, 3 when SQLAlchemy or psycopg is not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgveil_clients as common  # noqa: E402

try:
    import psycopg  # noqa: F401  (the dialect's driver)
    from sqlalchemy import (BigInteger, Column, Date, DateTime, Identity, MetaData, Table, Text, create_engine,
                            delete, func, insert, select, update)
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
except ImportError as e:  # pragma: no cover
    common.fail(f"py_sqlalchemy.py: SQLAlchemy or psycopg is not installed ({e}); run tests/clients/setup.sh", 3)

BULK = 200
FIELDS = ("first_name", "last_name", "ssn", "date_of_birth", "phone", "email", "address", "medical_history")

# ---------------------------------------------------------------------------
# The table, with the logical types (Core) ...

metadata = MetaData()
patients = Table(
    "patients", metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("ssn", Text, unique=True),
    Column("date_of_birth", Date),
    Column("phone", Text),
    Column("email", Text),
    Column("address", Text),
    Column("medical_history", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema="public",
)


# ... and as a mapped class (ORM).
class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = {"schema": "public"}

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    first_name: Mapped[str] = mapped_column(Text)
    last_name: Mapped[str] = mapped_column(Text)
    ssn: Mapped[str | None] = mapped_column(Text, unique=True)
    date_of_birth: Mapped[dt.date | None] = mapped_column(Date)
    phone: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    medical_history: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# ---------------------------------------------------------------------------
# Values and checks


def person(tag: str, kind: str, n: int) -> dict:
    """One patient's values; `kind` keeps the Core and ORM rows apart."""
    return {
        "first_name": f"CANARY-{tag}-{kind}-first-{n}",
        "last_name": f"CANARY-{tag}-{kind}-Zoë-{n}",
        "ssn": f"CANARY-{tag}-{kind}-{n:03d}-45-6789",
        "date_of_birth": dt.date(1950, 1, 1) + dt.timedelta(days=97 * n),
        "phone": f"CANARY +1 555 {n:04d}" if n % 3 else None,
        "email": f"canary.{tag}.{kind}.{n}@example.com",
        "address": f"CANARY {n} O'Brien St\nSpringfield",
        "medical_history": f"CANARY-{tag} history {n}: \"quoted\" \\ tab\t🩺",
    }


def expect(what: str, cond: bool, detail: str = "") -> None:
    if not cond:
        raise common.ClientError(f"{what}{': ' + detail if detail else ''}")


def expect_values(what: str, got: dict, want: dict) -> None:
    diff = [f"  {k}: wrote {want[k]!r}, read {got.get(k)!r}" for k in want if got.get(k) != want[k]]
    expect(what, not diff, "values differ:\n" + "\n".join(diff))


def as_dict(obj) -> dict:
    """A Core row mapping or an ORM object -> {column: value} of the FIELDS."""
    if hasattr(obj, "_mapping"):
        return {k: obj._mapping[k] for k in FIELDS}
    return {k: getattr(obj, k) for k in FIELDS}


# ---------------------------------------------------------------------------
# Core


def core(engine, tag: str) -> str:
    one = person(tag, "core", 0)
    many = [person(tag, "core", n) for n in range(1, BULK + 1)]
    returned = [person(tag, "core", n) for n in range(BULK + 1, 2 * BULK + 1)]
    with engine.begin() as conn:
        # Insert one row, RETURNING the id.
        new_id = conn.execute(insert(patients).returning(patients.c.id), one).scalar_one()
        expect("Core insert RETURNING id", isinstance(new_id, int), repr(new_id))

        # Bulk insert: a list of dicts (executemany).
        result = conn.execute(insert(patients), many)
        expect("Core bulk insert rowcount", result.rowcount in (BULK, -1), str(result.rowcount))

        # Bulk insert with RETURNING: insertmanyvalues, rows in parameter order.
        stmt = insert(patients).returning(patients.c.id, patients.c.ssn, sort_by_parameter_order=True)
        rows = conn.execute(stmt, returned).all()
        expect("Core insertmanyvalues RETURNING", [r.ssn for r in rows] == [p["ssn"] for p in returned],
               f"{len(rows)} rows, ssn order/values differ")

        # Select by ssn: every row written above.
        for p in [one] + many + returned:
            by_ssn = select(patients).where(patients.c.ssn == p["ssn"])
            found = conn.execute(by_ssn).all()
            expect(f"Core select by ssn {p['ssn']}", len(found) == 1, f"{len(found)} rows")
            expect_values(f"Core select by ssn {p['ssn']}", as_dict(found[0]), p)

        # Select by ssn IN (...).
        ssns = [p["ssn"] for p in many]
        found = conn.execute(select(patients).where(patients.c.ssn.in_(ssns))).all()
        expect("Core select by ssn IN", sorted(r.ssn for r in found) == sorted(ssns), f"{len(found)} rows")
        count = conn.execute(select(func.count()).select_from(patients)
                             .where(patients.c.ssn.in_([p["ssn"] for p in returned]))).scalar_one()
        expect("Core count by ssn IN", count == BULK, str(count))

        # Update by ssn.
        changes = {"last_name": f"CANARY-{tag}-core-renamed", "phone": None, "date_of_birth": dt.date(2000, 2, 29)}
        result = conn.execute(update(patients).where(patients.c.ssn == one["ssn"]).values(**changes))
        expect("Core update by ssn rowcount", result.rowcount == 1, str(result.rowcount))
        row = conn.execute(select(patients).where(patients.c.ssn == one["ssn"])).one()
        expect_values("Core select after update", as_dict(row), {**one, **changes})
        expect("Core update kept the id", row.id == new_id, f"{row.id} != {new_id}")

        # Delete by ssn, and by ssn IN (...).
        result = conn.execute(delete(patients).where(patients.c.ssn == one["ssn"]))
        expect("Core delete by ssn rowcount", result.rowcount == 1, str(result.rowcount))
        gone = conn.execute(select(patients.c.id).where(patients.c.ssn == one["ssn"])).all()
        expect("Core select after delete", gone == [], f"{len(gone)} rows left")
        result = conn.execute(delete(patients).where(patients.c.ssn.in_(ssns[:50])))
        expect("Core delete by ssn IN rowcount", result.rowcount == 50, str(result.rowcount))
        left = conn.execute(select(func.count()).select_from(patients).where(patients.c.ssn.in_(ssns))).scalar_one()
        expect("Core count after delete", left == BULK - 50, str(left))
    return f"core: {1 + 2 * BULK} inserted, {1 + 2 * BULK} selected by ssn, 1 updated, 51 deleted"


# ---------------------------------------------------------------------------
# ORM


def count_by_ssn(session, ssns) -> int:
    return session.scalar(select(func.count()).select_from(Patient).where(Patient.ssn.in_(ssns)))


def orm(engine, tag: str) -> str:
    one = person(tag, "orm", 0)
    many = [person(tag, "orm", n) for n in range(1, BULK + 1)]
    ssns = [p["ssn"] for p in many]

    # Add one object and commit.
    with Session(engine) as session:
        p = Patient(**one)
        session.add(p)
        session.commit()
        new_id = p.id  # reloaded after the commit
        expect("ORM add: id", isinstance(new_id, int), repr(new_id))
        expect("ORM add: created_at", isinstance(p.created_at, dt.datetime), repr(p.created_at))

    # Query by ssn in a new session, change attributes, commit.
    with Session(engine) as session:
        p = session.scalars(select(Patient).where(Patient.ssn == one["ssn"])).one()
        expect("ORM select by ssn: id", p.id == new_id, f"{p.id} != {new_id}")
        expect_values("ORM select by ssn", as_dict(p), one)
        p.last_name = f"CANARY-{tag}-orm-renamed"
        p.medical_history = None
        session.commit()
    with Session(engine) as session:
        p = session.scalars(select(Patient).where(Patient.ssn == one["ssn"])).one()
        expect_values("ORM select after update", as_dict(p),
                      {**one, "last_name": f"CANARY-{tag}-orm-renamed", "medical_history": None})

    # add_all: 200 objects in one flush (insertmanyvalues, RETURNING id).
    with Session(engine) as session:
        objs = [Patient(**v) for v in many]
        session.add_all(objs)
        session.commit()
        ids = [o.id for o in objs]
        expect("ORM add_all: ids", len(set(ids)) == BULK and all(isinstance(i, int) for i in ids))
    with Session(engine) as session:
        expect("ORM count after add_all", count_by_ssn(session, ssns) == BULK)
        found = {o.ssn: o for o in session.scalars(select(Patient).where(Patient.ssn.in_(ssns)))}
        for v, i in zip(many, ids):
            expect(f"ORM select {v['ssn']}", v["ssn"] in found, "missing")
            expect_values(f"ORM select {v['ssn']}", as_dict(found[v["ssn"]]), v)
            expect(f"ORM select {v['ssn']}: id", found[v["ssn"]].id == i, f"{found[v['ssn']].id} != {i}")

    # Delete: an object (DELETE ... WHERE id), and by ssn (DELETE ... WHERE ssn).
    with Session(engine) as session:
        session.delete(session.scalars(select(Patient).where(Patient.ssn == one["ssn"])).one())
        session.commit()
        expect("ORM select after delete",
               session.scalars(select(Patient).where(Patient.ssn == one["ssn"])).first() is None)
        result = session.execute(delete(Patient).where(Patient.ssn == many[0]["ssn"]))
        expect("ORM delete by ssn rowcount", result.rowcount == 1, str(result.rowcount))
        session.commit()
        left = count_by_ssn(session, ssns)
        expect("ORM count after delete", left == BULK - 1, str(left))
    return f"orm: {1 + BULK} added, 1 updated, 2 deleted, {BULK - 1} left"


def sqlalchemy_url(url: str) -> str:
    """postgresql://... or postgres://... -> postgresql+psycopg://..."""
    m = re.match(r"^(postgres|postgresql)(\+\w+)?://", url)
    if not m:
        raise common.ClientError(f"DATABASE_URL must start with postgresql:// (got {url.split('://')[0]}://)")
    return "postgresql+psycopg://" + url[m.end():]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="py_sqlalchemy.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", metavar="DATABASE_URL")
    p.add_argument("tag")
    args = p.parse_args(argv)
    engine = None
    try:
        tag = common.check_tag(args.tag)
        engine = create_engine(sqlalchemy_url(args.url))
        summary = [core(engine, tag), orm(engine, tag)]
    except common.ClientError as e:
        common.fail(f"py_sqlalchemy: {e}")
    except sa_exc.DBAPIError as e:  # what SQLAlchemy wraps psycopg's errors in
        common.fail(f"py_sqlalchemy: database error: {type(e.orig).__name__}: {e.orig}", 2)
    except sa_exc.SQLAlchemyError as e:  # e.g. NoResultFound, StaleDataError: a result differs
        common.fail(f"py_sqlalchemy: {type(e).__name__}: {e}")
    finally:
        if engine is not None:
            engine.dispose()
    print(f"ok {tag}: " + "; ".join(summary))


if __name__ == "__main__":
    main()
