"""Steps for migrations that differ between the engines (issue 15; docs/plans/postgresql.md §3).

Since ``0028_postgresql_baseline`` one yoyo history serves SQLite and PostgreSQL. A migration from
0029 on is portable SQL (yoyo ``step("...")``), or is built with these helpers:

- ``pg_only(apply_sql, rollback_sql)``: a step that runs only on PostgreSQL (functions SQLite has
  built in, partitions, ``tsvector`` columns); on SQLite it is recorded and does nothing.
- ``per_engine(sqlite=..., postgresql=...)``: a step with one SQL text per engine.

``is_postgresql(conn)`` tells yoyo's DB-API connection apart (psycopg 3 or psycopg2 against
``sqlite3.Connection``).
"""

from __future__ import annotations

from typing import Any

from yoyo import step


def is_postgresql(conn: Any) -> bool:
    """Whether yoyo's DB-API connection ``conn`` is a PostgreSQL one, by the module of its type."""
    return type(conn).__module__.split(".")[0] in ("psycopg", "psycopg2")


def _run(conn: Any, sql: str | None) -> None:
    if not sql:
        return
    cur = conn.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()


def per_engine(sqlite: str | None = None, postgresql: str | None = None,
               sqlite_rollback: str | None = None, postgresql_rollback: str | None = None) -> Any:
    """A yoyo step that runs ``sqlite`` on SQLite and ``postgresql`` on PostgreSQL (either may be None:
    nothing on that engine), with the matching rollback SQL. Each text may hold several statements
    on PostgreSQL (psycopg runs a parameterless multi-statement string); on SQLite give one
    statement per step (``sqlite3`` executes one)."""

    def apply(conn: Any) -> None:
        _run(conn, postgresql if is_postgresql(conn) else sqlite)

    def rollback(conn: Any) -> None:
        _run(conn, postgresql_rollback if is_postgresql(conn) else sqlite_rollback)

    return step(apply, rollback)


def pg_only(apply_sql: str, rollback_sql: str | None = None) -> Any:
    """A yoyo step that runs ``apply_sql`` on PostgreSQL only (``rollback_sql`` to undo it); on SQLite
    nothing."""
    return per_engine(postgresql=apply_sql, postgresql_rollback=rollback_sql)
