#!/usr/bin/env python3
"""Django ORM bulk paths on public.patients (see README.md).

  py_django.py <DATABASE_URL> <tag> [--server-side-binding]

Django >= 5.2 sends `bulk_create` on PostgreSQL as
`INSERT INTO "patients" (...) SELECT * FROM UNNEST((%s)::text[], ...)`, one
array per column. With psycopg 3 Django binds client-side by default (the
arrays arrive as literals in the statement text); `--server-side-binding`
sets the backend option that sends them as parameters instead.

bulk_create of 1,000 patients (every column but medical_history non-NULL on
most rows, NULLs mixed in), then: a count, a look-up of each SSN through the
ORM (Patient.objects.get(ssn=...)), filter(ssn__in=[...]), and a full read
compared with what was written. The model is unmanaged: nothing is created.

stdout: `ok` and a summary. Exit 1 when a result differs from what was
written, 2 on a database error, 3 when Django or psycopg is not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgveil_clients as common  # noqa: E402

try:
    import django
    import psycopg  # noqa: F401
    from django.conf import settings
except ImportError as e:  # pragma: no cover
    common.fail(f"py_django.py: Django or psycopg is not installed ({e}); run tests/clients/setup.sh", 3)

COUNT = 1000


def configure(url: str, server_side: bool) -> None:
    u = urlparse(url)
    q = {k: v[0] for k, v in parse_qs(u.query).items()}
    options = {k: q[k] for k in ("sslmode", "sslrootcert") if k in q}
    if server_side:
        options["server_side_binding"] = True
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": u.path.lstrip("/"),
                "USER": unquote(u.username or ""),
                "PASSWORD": unquote(u.password or ""),
                "HOST": u.hostname,
                "PORT": str(u.port or 5432),
                "OPTIONS": options,
            }
        },
        INSTALLED_APPS=[],
        USE_TZ=True,
        TIME_ZONE="UTC",
    )
    django.setup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("tag")
    ap.add_argument("--server-side-binding", action="store_true")
    a = ap.parse_args()
    tag = common.check_tag(a.tag)
    configure(a.url, a.server_side_binding)

    from django.db import models
    from django.db.utils import DatabaseError

    class Patient(models.Model):
        id = models.BigAutoField(primary_key=True)
        first_name = models.TextField()
        last_name = models.TextField()
        ssn = models.TextField(null=True, unique=True)
        date_of_birth = models.DateField(null=True)
        phone = models.TextField(null=True)
        email = models.TextField(null=True)
        address = models.TextField(null=True)
        medical_history = models.TextField(null=True)

        class Meta:
            app_label = "clinic"
            db_table = "patients"
            managed = False

    def person(i: int) -> Patient:
        return Patient(
            first_name=f"CANARY{tag}First{i}",
            last_name=f"CANARY{tag}Last {i} O'Brien",
            ssn=None if i % 10 == 0 else f"{tag}-{i:06d}",
            date_of_birth=None if i % 3 == 0 else dt.date(1950, 1, 1) + dt.timedelta(days=i * 7),
            phone=f"+1 555 {i:07d}",
            email=f"canary.{tag}.{i}@example.org",
            address=None if i % 4 == 0 else f'{i} "Main" St, {{Apt}} \\{i}',
            medical_history=None if i % 2 else f"CANARY{tag} history {i}\nline two, ünïcode",
        )

    want = [person(i) for i in range(COUNT)]
    try:
        created = Patient.objects.bulk_create(want, batch_size=COUNT)
        if any(p.pk is None for p in created):
            common.fail("bulk_create returned objects without ids")
        n = Patient.objects.filter(first_name__isnull=False, id__in=[p.pk for p in created]).count()
        if n != COUNT:
            common.fail(f"count {n} != {COUNT}")
        # Look-ups by the deterministic column.
        for i in range(1, COUNT, 97):
            if i % 10 == 0:
                continue
            p = Patient.objects.get(ssn=f"{tag}-{i:06d}")
            if p.first_name != f"CANARY{tag}First{i}":
                common.fail(f"ssn look-up {i}: wrong row")
        some = [f"{tag}-{i:06d}" for i in (1, 2, 3, 11)]
        if Patient.objects.filter(ssn__in=some).count() != 4:
            common.fail("ssn__in count")
        fields = ["first_name", "last_name", "ssn", "date_of_birth", "phone", "email", "address", "medical_history"]
        got = {p.pk: p for p in Patient.objects.filter(id__in=[p.pk for p in created])}
        for w in created:
            g = got.get(w.pk)
            if g is None:
                common.fail(f"row {w.pk} missing")
            for f in fields:
                if getattr(g, f) != getattr(w, f):
                    common.fail(f"row {w.pk}.{f} differs")
    except DatabaseError as e:
        common.fail(f"database error: {e}", 2)
    common.write_stdout(f"ok: bulk_create {COUNT} rows, look-ups and a full read equal ({'server' if a.server_side_binding else 'client'}-side binding)\n")


if __name__ == "__main__":
    main()
