"""Statistics on the expressions of the listing rule, on PostgreSQL (issue 15).

``appview.views.LISTED`` (and ``ACTIVE``) filter tracks by ``COALESCE(t.hidden, 0) = 0`` and their
artist by ``COALESCE(a.active, 1) = 1 AND COALESCE(a.hidden, 0) < 2``: the artist is outer-joined,
so the COALESCEs stay. Without statistics on those expressions PostgreSQL guesses each keeps 0.5%
of the rows, expects one or two tracks out of a genre, and picks a nested loop that walks the whole
aggregated chart for every track: getChart's top of a genre took 0.2 s at 5,000 tracks and over
10 s at 20,000. With them (``CREATE STATISTICS`` on an expression, PostgreSQL 14+) it hashes: 9 ms.
On SQLite: nothing (its planner does not estimate from these)."""

from core.migration_steps import pg_only

__depends__ = {"0034_actor_counts"}

steps = [
    pg_only(
        "CREATE STATISTICS track_listed_hidden ON (COALESCE(hidden, 0)) FROM track; "
        "CREATE STATISTICS actor_listed_active ON (COALESCE(active, 1)) FROM actor; "
        "CREATE STATISTICS actor_listed_hidden ON (COALESCE(hidden, 0)) FROM actor; "
        "CREATE STATISTICS album_listed_hidden ON (COALESCE(hidden, 0)) FROM album; "
        "CREATE STATISTICS playlist_listed_hidden ON (COALESCE(hidden, 0)) FROM playlist; "
        "ANALYZE track, actor, album, playlist",
        "DROP STATISTICS IF EXISTS track_listed_hidden, actor_listed_active, actor_listed_hidden, "
        "album_listed_hidden, playlist_listed_hidden"),
]
