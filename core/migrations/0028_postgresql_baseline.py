"""The PostgreSQL baseline (issue 15; docs/plans/postgresql.md, section 3).

One history, two engines. Migrations 0001-0027 are SQLite history: they are written in SQLite's
dialect and run on SQLite only. On PostgreSQL ``core.db.migrate`` marks every migration before this
one as applied without running it, and this migration creates the whole schema they add up to at
once, from ``core/postgresql_baseline.sql`` (generated from those migrations by
``devkit/pg_schema.py``: ``.venv/bin/python -m devkit.pg_schema``; never edit it by hand). On SQLite
this migration is recorded and does nothing.

Every migration from 0029 on must run on both engines: write portable SQL, or give each engine its
own step (``core.migration_steps``: ``pg_only``, ``per_engine``).
"""

from __future__ import annotations

from pathlib import Path

from yoyo import step

from core.migration_steps import is_postgresql

__depends__ = {"0026_suspended", "0027_label_prefs"}

#: The schema of migrations 0001-0027 in PostgreSQL (core/postgresql_baseline.sql).
BASELINE_SQL = Path(__file__).resolve().parent.parent / "postgresql_baseline.sql"


def create_baseline(conn) -> None:
    """On PostgreSQL, run ``BASELINE_SQL`` (many statements, no parameters, inside yoyo's
    transaction); on SQLite, nothing."""
    if not is_postgresql(conn):
        return
    cur = conn.cursor()
    try:
        cur.execute(BASELINE_SQL.read_text(encoding="utf-8"))
    finally:
        cur.close()


steps = [step(create_baseline)]
