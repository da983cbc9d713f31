"""Shared logic of the Python real-client drivers (py_psycopg.py, py_asyncpg.py).

The fixture (fixture.json), the write plan (which statements a writer runs, in
which order) and the canonical form of every value live here, so that both
Python drivers behave identically. node/pg_client.js implements the same rules
in JavaScript; README.md is the specification both follow.

Nothing in here knows about encryption: it only sees the logical tables.
"""

from __future__ import annotations

import datetime as dt
import decimal
import fractions
import json
import math
import re
import struct
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
FIXTURE_PATH = HERE / "fixture.json"

TABLES = ("lab_results", "patients")

# Columns every `read` leaves out: they differ between databases and writers.
SKIPPED_COLUMNS = {
    "lab_results": {"id", "patient_id"},
    "patients": {"id", "created_at"},
}

# Plain (unprotected) columns `read` keeps besides the fixture's columns.
EXTRA_COLUMNS = {"lab_results": {"lab": "text"}, "patients": {}}

# Writer tags: lab_results.lab = tag; these patients columns get "tag:" in front.
TAG_PREFIX_COLUMNS = {"lab_results": (), "patients": ("first_name", "ssn")}
TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")

# Type OID PostgreSQL reports (RowDescription) for each logical type.
TYPE_OIDS = {
    "bool": 16,
    "bytea": 17,
    "int8": 20,
    "int2": 21,
    "int4": 23,
    "text": 25,
    "json": 114,
    "float4": 700,
    "float8": 701,
    "varchar": 1043,
    "date": 1082,
    "time": 1083,
    "timestamp": 1114,
    "timestamptz": 1184,
    "numeric": 1700,
    "uuid": 2950,
    "jsonb": 3802,
}


class ClientError(Exception):
    """A failure the driver reports on stderr before exiting non-zero."""


# --------------------------------------------------------------------------
# Fixture


def base_type(logical: str) -> str:
    """'varchar(32)' -> 'varchar', 'numeric(12,4)' -> 'numeric'."""
    return logical.split("(", 1)[0].strip()


def numeric_scale(logical: str) -> Optional[int]:
    m = re.fullmatch(r"numeric\(\s*\d+\s*(?:,\s*(\d+)\s*)?\)", logical)
    if m:
        return int(m.group(1) or 0)
    return None


def _expand(value: Any) -> Any:
    """Expands {"prefix": p, "repeat": r, "times": n, "suffix": s} markers."""
    if isinstance(value, dict):
        if set(value) - {"prefix", "repeat", "times", "suffix"} or "repeat" not in value:
            raise ClientError(f"fixture: bad value marker {value!r}")
        return (
            value.get("prefix", "")
            + value["repeat"] * int(value["times"])
            + value.get("suffix", "")
        )
    return value


def load_fixture(path: Path = FIXTURE_PATH) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        fx = json.load(f)
    for table in TABLES:
        cols = fx["columns"][table]
        for row in fx[table]:
            for k in list(row):
                if k not in cols:
                    raise ClientError(f"fixture: {table} row has unknown column {k!r}")
                row[k] = _expand(row[k])
    for upd in fx["updates"]:
        for k in list(upd["set"]):
            upd["set"][k] = _expand(upd["set"][k])
    for ret in fx["returning"]:
        for k in list(ret["row"]):
            ret["row"][k] = _expand(ret["row"][k])
    return fx


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise ClientError(f"writer tag {tag!r} must match {TAG_RE.pattern}")
    return tag


def tagged(table: str, column: str, value: Any, tag: str) -> Any:
    if value is not None and column in TAG_PREFIX_COLUMNS[table]:
        return f"{tag}:{value}"
    return value


# --------------------------------------------------------------------------
# Parsing fixture strings (the same syntax node/pg_client.js accepts)

_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TIME_RE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")
_TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?$"
)


def _micros(frac: Optional[str]) -> int:
    return int((frac or "").ljust(6, "0")) if frac else 0


def parse_date(s: str) -> dt.date:
    m = _DATE_RE.match(s)
    if not m:
        raise ClientError(f"bad date {s!r}")
    return dt.date(int(m[1]), int(m[2]), int(m[3]))


def parse_time(s: str) -> dt.time:
    m = _TIME_RE.match(s)
    if not m:
        raise ClientError(f"bad time {s!r}")
    return dt.time(int(m[1]), int(m[2]), int(m[3]), _micros(m[4]))


def _parse_offset(s: str) -> dt.timezone:
    if s == "Z":
        return dt.timezone.utc
    sign = -1 if s[0] == "-" else 1
    digits = s[1:].replace(":", "")
    h, mi, se = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    return dt.timezone(sign * dt.timedelta(hours=h, minutes=mi, seconds=se))


def parse_timestamp(s: str, with_tz: bool) -> dt.datetime:
    m = _TS_RE.match(s)
    if not m or (m[8] is None) == with_tz:
        kind = "timestamptz (with an explicit offset)" if with_tz else "timestamp (no offset)"
        raise ClientError(f"bad {kind} {s!r}")
    tz = _parse_offset(m[8]) if with_tz else None
    return dt.datetime(
        int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), _micros(m[7]), tzinfo=tz
    )


def parse_bytea(s: str) -> bytes:
    if not s.startswith("\\x"):
        raise ClientError(f"bad bytea {s!r} (want \\x followed by hex digits)")
    return bytes.fromhex(s[2:])


def to_python(logical: str, value: Optional[str]) -> Any:
    """Fixture string -> the Python object a driver binds (json stays str)."""
    if value is None:
        return None
    t = base_type(logical)
    if t in ("text", "varchar", "json", "jsonb"):
        return value
    if t == "uuid":
        return uuid.UUID(value)
    if t == "numeric":
        return decimal.Decimal(value)
    if t in ("float4", "float8"):
        return float(value)
    if t in ("int2", "int4", "int8"):
        return int(value)
    if t == "bool":
        if value not in ("true", "false"):
            raise ClientError(f"bad bool {value!r}")
        return value == "true"
    if t == "date":
        return parse_date(value)
    if t == "time":
        return parse_time(value)
    if t == "timestamp":
        return parse_timestamp(value, False)
    if t == "timestamptz":
        return parse_timestamp(value, True)
    if t == "bytea":
        return parse_bytea(value)
    raise ClientError(f"unsupported logical type {logical!r}")


# --------------------------------------------------------------------------
# Canonical form


def _pg_float_style(negative: bool, digits: str, exp10: int, fixed_max: int) -> str:
    """PostgreSQL's float4out/float8out layout of shortest digits d.ddd x 10^exp10."""
    if -4 <= exp10 < fixed_max:
        if exp10 >= 0:
            if len(digits) <= exp10 + 1:
                s = digits + "0" * (exp10 + 1 - len(digits))
            else:
                s = digits[: exp10 + 1] + "." + digits[exp10 + 1 :]
        else:
            s = "0." + "0" * (-exp10 - 1) + digits
    else:
        s = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        s += "e" + ("-" if exp10 < 0 else "+") + f"{abs(exp10):02d}"
    return ("-" if negative else "") + s


def _decompose(x: float, bits: int):
    """Exact value of |x| and the open interval of reals that round to it."""
    if bits == 64:
        w = struct.unpack("<Q", struct.pack("<d", x))[0]
        mbits, bias, emask = 52, 1023, 0x7FF
    else:
        w = struct.unpack("<I", struct.pack("<f", x))[0]
        mbits, bias, emask = 23, 127, 0xFF
    biased = (w >> mbits) & emask
    frac = w & ((1 << mbits) - 1)
    if biased == 0:
        m, e = frac, 1 - bias - mbits
    else:
        m, e = frac | (1 << mbits), biased - bias - mbits
    two = fractions.Fraction(2)
    value = m * two**e
    half_up = two ** (e - 1)
    # Just above a power of two the next float down is twice as close.
    half_down = two ** (e - 2) if frac == 0 and biased > 1 else half_up
    return value, value - half_down, value + half_up


def _shortest_digits(x: float, bits: int) -> Tuple[int, int]:
    """(n, k): the shortest n * 10**k strictly inside x's rounding interval,
    the closest to x among those, the even n on a tie. PostgreSQL's float4out
    and float8out (Ryu, bounds excluded) choose the same digits."""
    value, low, high = _decompose(abs(x), bits)
    ten = fractions.Fraction(10)
    e10 = math.floor(math.log10(abs(x)))
    while ten**e10 > value:
        e10 -= 1
    while ten ** (e10 + 1) <= value:
        e10 += 1
    for p in range(1, 30):
        k = e10 - p + 1
        unit = ten**k
        n = math.floor(value / unit)
        inside = [c for c in (n, n + 1) if low < c * unit < high]
        if inside:
            return min(inside, key=lambda c: (abs(c * unit - value), c % 2)), k
    raise AssertionError(f"no decimal representation for {x!r}")


def _f32(x: float) -> float:
    """x rounded to the nearest float4 (IEEE round-to-nearest-even, overflow to inf)."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def canon_float(x: float, bits: int) -> str:
    """Shortest round-trip digits, laid out exactly as PostgreSQL prints the value."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if bits == 32:
        x = _f32(x)
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    n, k = _shortest_digits(x, bits)
    s = str(n)
    digits = s.rstrip("0")
    return _pg_float_style(x < 0, digits, k + len(s) - 1, 15 if bits == 64 else 6)


def _fmt_time(h: int, m: int, s: int, us: int) -> str:
    out = f"{h:02d}:{m:02d}:{s:02d}"
    return out + (f".{us:06d}" if us else "")


def _fmt_date(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _fmt_datetime(v: dt.datetime) -> str:
    return _fmt_date(v) + " " + _fmt_time(v.hour, v.minute, v.second, v.microsecond)


class _Num(str):
    """A JSON number kept as its literal text."""


def _reject_constant(name: str) -> Any:
    raise ClientError(f"JSON constant {name} is not valid JSON")


def json_canonical(text: str) -> str:
    """Parse and re-serialise: keys sorted by code point, no spaces, numbers verbatim."""
    try:
        value = json.loads(text, parse_int=_Num, parse_float=_Num, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ClientError(f"invalid JSON from the server: {e}: {text[:200]!r}") from None
    return _json_ser(value)


def _json_ser(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, _Num):
        return str.__str__(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(_json_ser(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _json_ser(v[k]) for k in keys) + "}"
    raise AssertionError(type(v))


def _want(cond: bool, where: str, logical: str, value: Any) -> None:
    if not cond:
        raise ClientError(
            f"{where}: the driver returned {type(value).__name__} {_short(value)} "
            f"for a column of logical type {logical}"
        )


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    if len(r) <= n:
        return r
    size = f"{len(v)} chars" if isinstance(v, str) else f"{len(r)} chars of repr"
    return r[:n] + f"... ({size})"


def canonical(logical: str, value: Any, where: str = "value") -> Optional[str]:
    """A value as a Python driver returned it -> canonical string (None stays None)."""
    if value is None:
        return None
    t = base_type(logical)
    if isinstance(value, memoryview):
        value = bytes(value)
    if t in ("text", "varchar"):
        _want(isinstance(value, str), where, logical, value)
        return value
    if t == "uuid":
        _want(isinstance(value, uuid.UUID), where, logical, value)
        return str(value).lower()
    if t == "numeric":
        _want(isinstance(value, decimal.Decimal), where, logical, value)
        return format(value, "f")
    if t in ("float4", "float8"):
        _want(isinstance(value, float), where, logical, value)
        return canon_float(value, 32 if t == "float4" else 64)
    if t in ("int2", "int4", "int8"):
        _want(isinstance(value, int) and not isinstance(value, bool), where, logical, value)
        return str(value)
    if t == "bool":
        _want(isinstance(value, bool), where, logical, value)
        return "true" if value else "false"
    if t == "date":
        _want(isinstance(value, dt.date) and not isinstance(value, dt.datetime), where, logical, value)
        return _fmt_date(value)
    if t == "time":
        _want(isinstance(value, dt.time) and value.tzinfo is None, where, logical, value)
        return _fmt_time(value.hour, value.minute, value.second, value.microsecond)
    if t == "timestamp":
        _want(isinstance(value, dt.datetime) and value.tzinfo is None, where, logical, value)
        return _fmt_datetime(value)
    if t == "timestamptz":
        _want(isinstance(value, dt.datetime) and value.utcoffset() is not None, where, logical, value)
        return _fmt_datetime(value.astimezone(dt.timezone.utc)) + "+00"
    if t in ("json", "jsonb"):
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        _want(isinstance(value, str), where, logical, value)
        return json_canonical(value)
    if t == "bytea":
        _want(isinstance(value, (bytes, bytearray)), where, logical, value)
        return "\\x" + bytes(value).hex()
    raise ClientError(f"unsupported logical type {logical!r}")


def expected(logical: str, value: Optional[str]) -> Optional[str]:
    """Fixture string -> the canonical string PostgreSQL should give back."""
    if value is None:
        return None
    t = base_type(logical)
    if t == "numeric":
        d = decimal.Decimal(value)
        scale = numeric_scale(logical)
        if scale is not None and d.is_finite():
            with decimal.localcontext() as ctx:
                ctx.prec = 1000
                d = d.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP)
        if d.is_zero():
            d = abs(d)
        return format(d, "f")
    if t in ("json", "jsonb"):
        return json_canonical(value)
    return canonical(logical, to_python(logical, value), "fixture")


# --------------------------------------------------------------------------
# The write plan


class Op:
    """One statement of a writer's run.

    kind: "insert" | "update" | "select_ids"
    columns: [(name, logical type)] bound in this order ($1..$n)
    values: the fixture strings for those columns
    returning: None | "id" | [(name, logical type)] (protected columns to check)
    """

    def __init__(self, kind: str, table: str, columns, values, returning=None, target=None, tag=None):
        self.kind = kind
        self.table = table
        self.columns = columns
        self.values = values
        self.returning = returning
        self.target = target  # for updates: index of the fixture row
        self.tag = tag

    def sql(self, placeholder: Callable[[int, str], str]) -> str:
        """The statement text; placeholder(i, logical) gives the i-th (1-based) marker."""
        if self.kind == "insert":
            names = ", ".join(c for c, _ in self.columns)
            marks = ", ".join(placeholder(i + 1, t) for i, (_, t) in enumerate(self.columns))
            s = f"INSERT INTO public.{self.table} ({names}) VALUES ({marks})"
            if self.returning == "id":
                s += " RETURNING id"
            elif self.returning:
                s += " RETURNING " + ", ".join(c for c, _ in self.returning)
            return s
        if self.kind == "update":
            sets = ", ".join(
                f"{c} = {placeholder(i + 1, t)}" for i, (c, t) in enumerate(self.columns)
            )
            n = len(self.columns) + 1
            return f"UPDATE public.{self.table} SET {sets} WHERE id = {placeholder(n, 'int8')}"
        if self.kind == "select_ids":
            return f"SELECT id FROM public.{self.table} WHERE lab = {placeholder(1, 'text')} ORDER BY id"
        raise AssertionError(self.kind)


def _row_columns(fx, table: str, row: Dict[str, Any], tag: str):
    cols = fx["columns"][table]
    columns, values = [], []
    if table == "lab_results":
        columns.append(("lab", "text"))
        values.append(tag)
    for name, logical in cols.items():  # fixture order; absent keys are left out
        if name in row:
            columns.append((name, logical))
            values.append(tagged(table, name, row[name], tag))
    return columns, values


def write_plan(fx, tag: str) -> List[Op]:
    """Statements of `write`, in order. Drivers execute them one by one.

    1. one INSERT per fixture row (lab_results plain, patients RETURNING id);
    2. SELECT id FROM lab_results WHERE lab = tag (the ids to update);
    3. the fixture's UPDATEs (WHERE id = <id of the target row>);
    4. the fixture's INSERT ... RETURNING <protected columns>, checked.
    """
    ops: List[Op] = []
    for table in TABLES:
        for row in fx[table]:
            columns, values = _row_columns(fx, table, row, tag)
            ops.append(Op("insert", table, columns, values, "id" if table == "patients" else None))
    ops.append(Op("select_ids", "lab_results", [("lab", "text")], [tag]))
    for upd in fx["updates"]:
        table = upd["table"]
        cols = fx["columns"][table]
        columns = [(c, cols[c]) for c in upd["set"]]
        values = [tagged(table, c, upd["set"][c], tag) for c in upd["set"]]
        ops.append(Op("update", table, columns, values, target=upd["row"]))
    for ret in fx["returning"]:
        table = ret["table"]
        columns, values = _row_columns(fx, table, ret["row"], tag)
        protected = [(c, t) for c, t in columns if c in fx["columns"][table]]
        ops.append(Op("insert", table, columns, values, protected))
    return ops


def check_returning(op: Op, returned: List[Any], raw_json_of: Callable[[Any], Optional[str]] = None) -> None:
    """Compares the RETURNING row with what was sent; raises ClientError on a mismatch."""
    sent = dict(zip((c for c, _ in op.columns), op.values))
    problems = []
    for (name, logical), got in zip(op.returning, returned):
        want = expected(logical, sent[name])
        have = canonical(logical, got, f"RETURNING {op.table}.{name}")
        if want != have:
            problems.append(f"  {op.table}.{name}: sent {_short(want)}, RETURNING gave {_short(have)}")
        elif base_type(logical) == "json" and got is not None and raw_json_of is not None:
            raw = raw_json_of(got)
            if raw != sent[name]:
                problems.append(
                    f"  {op.table}.{name}: json text not preserved: sent {_short(sent[name])}, got {_short(raw)}"
                )
    if len(returned) != len(op.returning):
        problems.append(f"  RETURNING gave {len(returned)} columns, expected {len(op.returning)}")
    if problems:
        raise ClientError("INSERT ... RETURNING does not give back what was sent:\n" + "\n".join(problems))


# --------------------------------------------------------------------------
# Reading and the output document


def select_sql(table: str) -> str:
    return f"SELECT * FROM public.{table} ORDER BY id"


def canonical_rows(fx, table: str, names: List[str], oids: List[int], rows: List[Tuple]) -> List[Dict[str, Optional[str]]]:
    """Driver rows (+ column names and type OIDs from the row description) -> canonical dicts."""
    types = dict(EXTRA_COLUMNS[table])
    types.update(fx["columns"][table])
    keep = []
    for i, (name, oid) in enumerate(zip(names, oids)):
        if name in SKIPPED_COLUMNS[table]:
            continue
        if name not in types:
            raise ClientError(f"{table}: unexpected column {name!r} in SELECT *")
        want_oid = TYPE_OIDS[base_type(types[name])]
        if oid != want_oid:
            raise ClientError(
                f"{table}.{name}: row description says type OID {oid}, expected {want_oid} ({types[name]})"
            )
        keep.append((i, name, types[name]))
    missing = set(types) - {n for _, n, _ in keep}
    if missing:
        raise ClientError(f"{table}: SELECT * lacks columns {sorted(missing)}")
    out = []
    for r in rows:
        out.append({name: canonical(t, r[i], f"{table}.{name}") for i, name, t in keep})
    return out


def raw_json_rows(fx, table: str, names: List[str], rows: List[Tuple]) -> List[Dict[str, Optional[str]]]:
    """The text of every `json` (not jsonb) column, for the byte-for-byte check."""
    cols = fx["columns"][table]
    idx = [(i, n) for i, n in enumerate(names) if n in cols and base_type(cols[n]) == "json"]
    out = []
    for r in rows:
        d = {}
        for i, n in idx:
            v = r[i]
            d[n] = v.decode("utf-8") if isinstance(v, (bytes, memoryview)) else v
        out.append(d)
    return out


def dump_document(doc: Dict[str, List[Dict[str, Optional[str]]]]) -> str:
    """The one JSON document `read` prints; node/pg_client.js writes the same bytes."""
    parts = []
    for table in TABLES:
        rows = ",".join(
            "\n" + json.dumps(r, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            for r in doc[table]
        )
        parts.append(f'\n"{table}":[{rows}\n]')
    return "{" + ",".join(parts) + "\n}\n"


def write_stdout(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


# --------------------------------------------------------------------------
# `check`: what a writer's rows must look like


def expected_rows(fx, tag: str) -> Dict[str, List[Dict[str, Optional[str]]]]:
    """Canonical rows of one writer after its `write`, in id order."""
    out: Dict[str, List[Dict[str, Optional[str]]]] = {}
    for table in TABLES:
        cols = fx["columns"][table]
        rows = []
        for row in fx[table] + [r["row"] for r in fx["returning"] if r["table"] == table]:
            rows.append({c: tagged(table, c, row.get(c), tag) for c in cols})
        for upd in fx["updates"]:
            if upd["table"] == table:
                for c, v in upd["set"].items():
                    rows[upd["row"]][c] = tagged(table, c, v, tag)
        canon = []
        for row in rows:
            c = {name: expected(cols[name], row[name]) for name in cols}
            if table == "lab_results":
                c["lab"] = tag
            canon.append(c)
        out[table] = canon
    return out


def expected_raw_json(fx, tag: str) -> Dict[str, List[Dict[str, str]]]:
    """For `json` (not jsonb) columns: the exact text each row must give back."""
    out = {}
    for table in TABLES:
        cols = fx["columns"][table]
        rows = [dict(r) for r in fx[table]] + [dict(r["row"]) for r in fx["returning"] if r["table"] == table]
        for upd in fx["updates"]:
            if upd["table"] == table:
                rows[upd["row"]].update(upd["set"])
        out[table] = [
            {c: row.get(c) for c, t in cols.items() if base_type(t) == "json"} for row in rows
        ]
    return out


def rows_of_writer(table: str, rows: List[Dict[str, Optional[str]]], tag: str) -> List[int]:
    """Indexes of the rows a writer wrote (lab = tag, or first_name starts with 'tag:')."""
    if table == "lab_results":
        return [i for i, r in enumerate(rows) if r.get("lab") == tag]
    return [i for i, r in enumerate(rows) if (r.get("first_name") or "").startswith(tag + ":")]


def describe_difference(table: str, index: int, want: Dict, have: Dict) -> List[str]:
    lines = []
    for k in sorted(set(want) | set(have)):
        w, h = want.get(k), have.get(k)
        if w != h:
            detail = ""
            if isinstance(w, str) and isinstance(h, str):
                at = next((i for i, (a, b) in enumerate(zip(w, h)) if a != b), min(len(w), len(h)))
                detail = f" (lengths {len(w)} vs {len(h)}, first difference at char {at})"
            lines.append(f"  {table}[{index}].{k}: expected {_short(w)}, got {_short(h)}{detail}")
    return lines


def compare_writer(fx, tag: str, doc, raw_json) -> List[str]:
    """Differences between the rows of `tag` in doc and the fixture (empty = equal)."""
    want_all = expected_rows(fx, tag)
    want_raw = expected_raw_json(fx, tag)
    problems: List[str] = []
    for table in TABLES:
        idx = rows_of_writer(table, doc[table], tag)
        have = [doc[table][i] for i in idx]
        want = want_all[table]
        if len(have) != len(want):
            problems.append(f"  {table}: {len(have)} rows of writer {tag!r}, expected {len(want)}")
        for n, (w, h) in enumerate(zip(want, have)):
            problems.extend(describe_difference(table, n, w, h))
        for n, (w, i) in enumerate(zip(want_raw[table], idx)):
            for col, text in w.items():
                got = raw_json[table][i].get(col)
                if got != text:
                    problems.append(
                        f"  {table}[{n}].{col}: json text not preserved byte for byte: "
                        f"expected {_short(text)}, got {_short(got)}"
                    )
    return problems


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.exit(code)
