"""The two lookups that link a teal play to one of our tracks, written once for both engines
(issue 15; ``indexer.teal_play.link``, the indexes of ``0022_interop``):

- by title: ``lower(title) = lower(?)`` instead of SQLite's ``title = ? COLLATE NOCASE``, which
  PostgreSQL lacks. Both fold ASCII letters only (SQLite's ``lower``; PostgreSQL's under the
  database's ``C`` collation). On SQLite ``track_title_nocase`` is rebuilt on ``lower(title)`` so the
  planner uses it; the PostgreSQL baseline already has it so.
- by ISRC: ``json_extract(json, '$.isrc')`` on PostgreSQL too, through a function of that name
  (text out; paths ``$.key`` or ``$.key.key``..., no array steps), and ``record_track_isrc`` rebuilt
  on the same expression there, so the planner matches the query's expression to the index's
  (the baseline spelled it ``json::json ->> 'isrc'``). On SQLite: the built-in function, and the
  index is unchanged.
"""

from __future__ import annotations

from core.migration_steps import per_engine, pg_only

__depends__ = {"0031_pg_typeof"}

JSON_EXTRACT = r"""
CREATE OR REPLACE FUNCTION json_extract(j text, path text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CAST(j AS json) #>> string_to_array(substr(path, 3), '.')
$$
"""

ISRC_WHERE = "WHERE collection = 'fm.openmusic.catalog.track'"

steps = [
    per_engine(sqlite="DROP INDEX track_title_nocase",
               sqlite_rollback="CREATE INDEX track_title_nocase ON track(title COLLATE NOCASE)"),
    per_engine(sqlite="CREATE INDEX track_title_nocase ON track(lower(title))",
               sqlite_rollback="DROP INDEX track_title_nocase"),
    pg_only(JSON_EXTRACT, "DROP FUNCTION IF EXISTS json_extract(text, text)"),
    pg_only("DROP INDEX record_track_isrc; "
            "CREATE INDEX record_track_isrc ON record(upper(replace(json_extract(json, '$.isrc'), '-', ''))) "
            + ISRC_WHERE,
            "DROP INDEX record_track_isrc; "
            "CREATE INDEX record_track_isrc ON record(upper(replace((json::json ->> 'isrc'), '-', ''))) "
            + ISRC_WHERE),
]
