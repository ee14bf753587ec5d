"""SQLite's ``typeof`` on PostgreSQL (issue 15): ``payments.ledger.check`` asks that every amount is
an integer (``typeof(amount) = 'integer'``), which SQLite's loose typing needs checked. On
PostgreSQL the column is a BIGINT, so the answer is the same by construction; ``typeof(x)`` names
the storage classes SQLite would (``integer``, ``real``, ``text``, ``blob``, ``null``). On SQLite:
nothing (the function is built in)."""

from __future__ import annotations

from core.migration_steps import pg_only

__depends__ = {"0030_pg_fts_query"}

FUNCTION = """
CREATE OR REPLACE FUNCTION typeof(x anyelement) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN x IS NULL THEN 'null'
        WHEN pg_typeof(x) IN ('bigint'::regtype, 'integer'::regtype, 'smallint'::regtype, 'boolean'::regtype)
            THEN 'integer'
        WHEN pg_typeof(x) IN ('double precision'::regtype, 'real'::regtype, 'numeric'::regtype) THEN 'real'
        WHEN pg_typeof(x) = 'bytea'::regtype THEN 'blob'
        ELSE 'text' END
$$
"""


steps = [pg_only(FUNCTION, "DROP FUNCTION IF EXISTS typeof(anyelement)")]
