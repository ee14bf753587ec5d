"""Read a runtime's index from a test, on either engine (issue 15).

A test that opened ``settings.db_path`` with ``sqlite3`` directly cannot see a PostgreSQL database
(``OPENMUSIC_TEST_ENGINE=postgresql``); these helpers go through ``core.db.connect_sync`` on
``settings.database`` (the SQLite file or the ``postgresql://`` URL), so the same SQL (``?``
placeholders, rewritten by ``core.pg.to_pg`` on PostgreSQL) reads either one.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings
from core.db import connect_sync


def _target(where: Settings | str) -> str:
    return where.database if isinstance(where, Settings) else where


def rows(where: Settings | str, sql: str, *args: Any) -> list[tuple]:
    """Every row of ``sql`` (``?`` parameters ``args``) run on ``where`` (``Settings``: its
    ``database``; or a SQLite path / PostgreSQL URL), as plain tuples. Raises the driver's errors."""
    conn = connect_sync(_target(where))
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def one(where: Settings | str, sql: str, *args: Any) -> tuple | None:
    """The first row of ``sql`` on ``where`` as a plain tuple, or None when there is none."""
    found = rows(where, sql, *args)
    return found[0] if found else None
