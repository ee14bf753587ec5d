"""Full-text search queries on PostgreSQL (issue 15): ``fts_match_query(q)`` turns the FTS5 query
text our search builds (``"word"* "word"*``: every word, as a prefix, all required;
``appview.queries.search_tracks``) into a ``tsquery`` of the same meaning (``word:* & word:*``,
the words lower-cased as the ``simple`` configuration indexes them). ``core.pg.to_pg`` rewrites
``track_fts MATCH ?`` to ``track_fts.tsv @@ fts_match_query(?)``. On SQLite: nothing (FTS5 reads the
text itself)."""

from __future__ import annotations

from core.migration_steps import pg_only

__depends__ = {"0029_audio_takedown"}

FUNCTION = r"""
CREATE OR REPLACE FUNCTION fts_match_query(q text) RETURNS tsquery LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT to_tsquery('simple', string_agg(quote_literal(lower(m[1])) || ':*', ' & '))
    FROM regexp_matches(q, '"([^"]+)"\*?', 'g') AS m
$$
"""


steps = [pg_only(FUNCTION, "DROP FUNCTION IF EXISTS fts_match_query(text)")]
