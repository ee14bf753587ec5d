"""``core.pg.to_pg`` in units: the rewrite of our SQLite SQL for PostgreSQL (issue 15).

Proves: ``?`` and ``:name`` become psycopg placeholders outside string literals, quoted identifiers
and comments, never touching ``::`` casts; every ``%`` is doubled (also in literals, as psycopg
parses the whole text); ``INSERT OR IGNORE`` becomes ``ON CONFLICT DO NOTHING`` (before a
``RETURNING``); ``strftime(.., 'now')`` becomes ``iso_now()``; SQLite's planner hints go; ``Row``
answers by index and by name; the engine is chosen by the target's scheme.
"""

from __future__ import annotations

import pytest

from core.db import is_postgres, shown_target
from core.pg import _row_class, to_pg


@pytest.mark.parametrize("sqlite, postgres", [
    ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
    ("SELECT 1 FROM t WHERE d = :me AND e::text = :when", "SELECT 1 FROM t WHERE d = %(me)s AND e::text = %(when)s"),
    ("SELECT 'what? :no' FROM t WHERE x LIKE 'a%'", "SELECT 'what? :no' FROM t WHERE x LIKE 'a%%'"),
    ("SELECT \"odd?col\", 'it''s ?' FROM t WHERE y = ?", "SELECT \"odd?col\", 'it''s ?' FROM t WHERE y = %s"),
    ("SELECT 1 -- why? 'x\nFROM t WHERE z = ?", "SELECT 1 -- why? 'x\nFROM t WHERE z = %s"),
    ("INSERT OR IGNORE INTO actor (did) VALUES (?)", "INSERT INTO actor (did) VALUES (%s) ON CONFLICT DO NOTHING"),
    ("insert or ignore into a (x) select x from b returning x",
     "INSERT INTO a (x) select x from b ON CONFLICT DO NOTHING returning x"),
    ("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", "SELECT iso_now()"),
    ("SELECT 1 FROM track t INDEXED BY track_sort CROSS JOIN actor a ON a.did = t.did",
     "SELECT 1 FROM track t JOIN actor a ON a.did = t.did"),
    ("SELECT 1 FROM a CROSS JOIN b", "SELECT 1 FROM a CROSS JOIN b"),
    ("DELETE FROM t WHERE k = ?;", "DELETE FROM t WHERE k = %s"),
    ("SELECT a FROM t WHERE d = ?1 AND c = ?2 UNION SELECT b FROM u WHERE d = ?1",
     "SELECT a FROM t WHERE d = %(p1)s AND c = %(p2)s UNION SELECT b FROM u WHERE d = %(p1)s"),
    ("SELECT 1 FROM actor WHERE counted <> (active = 1 AND hidden < 2)",
     "SELECT 1 FROM actor WHERE counted <> CAST((active = 1 AND hidden < 2) AS INTEGER)"),
    ("SELECT rowid FROM track_fts WHERE track_fts MATCH ?", "SELECT rowid FROM track_fts WHERE track_fts.tsv @@ fts_match_query(%s)"),
    ("INSERT INTO main.track_day SELECT * FROM temp.recount_day", "INSERT INTO public.track_day SELECT * FROM pg_temp.recount_day"),
])

def test_rewrite(sqlite, postgres):
    assert to_pg(sqlite) == postgres


def test_numbered_parameters_become_named():
    from core.pg import _params
    assert _params(("d", "c"), "SELECT 1 FROM t WHERE a = ?1 AND b = ?2 OR a = ?1") == {"p1": "d", "p2": "c"}
    assert _params(("d",), "SELECT 1 FROM t WHERE a = ? AND b = '?1'") == ("d",)
    assert _params(None, "SELECT 1") == ()


def test_rows_answer_by_index_and_name():
    cls = _row_class(("uri", "plays", "uri"))
    row = tuple.__new__(cls, ("at://x", 3, "second"))
    assert row[0] == "at://x" and row["plays"] == 3 and row["uri"] == "at://x" and row[-1] == "second"
    assert row.keys() == ["uri", "plays", "uri"] and tuple(row) == ("at://x", 3, "second")
    assert dict(zip(row.keys(), row, strict=True))["plays"] == 3
    with pytest.raises(IndexError):
        row["nope"]


def test_engine_by_target():
    assert is_postgres("postgresql://u:secret@127.0.0.1:5432/om") and is_postgres("postgres://h/db")
    assert not is_postgres("data/openmusic.sqlite") and not is_postgres("/tmp/postgresql.sqlite")
    assert shown_target("postgresql://u:secret@127.0.0.1:5432/om") == "postgresql://u@127.0.0.1:5432/om"
    assert "secret" not in shown_target("postgresql://u:secret@h/db") and shown_target("x.sqlite") == "x.sqlite"


def test_errors_of_the_data_are_not_failures_of_the_database():
    """By SQLSTATE: an index row too large (54000) is an OperationalError in psycopg but the data's
    fault (the record is rejected); a lost connection or a deadlock is the database's (retry)."""
    from psycopg import OperationalError, errors

    from core.pg import is_infrastructure_error
    assert issubclass(errors.ProgramLimitExceeded, OperationalError)
    assert not is_infrastructure_error(errors.ProgramLimitExceeded("index row size exceeds btree maximum"))
    assert not is_infrastructure_error(errors.UniqueViolation("duplicate key"))
    assert is_infrastructure_error(errors.AdminShutdown("terminating connection"))
    assert is_infrastructure_error(errors.DeadlockDetected("deadlock detected"))
    assert is_infrastructure_error(OperationalError("the connection is lost"))  # no SQLSTATE
