"""Interop with the other music apps on ATProto (issue 14).

``teal_play`` holds one row per indexed teal.fm scrobble (``fm.teal.feed.play`` and the legacy
``fm.teal.alpha.feed.play``, ``indexer.teal_play``): the record's ``uri``, listener ``did``,
``rkey``, ``cid`` and ``collection`` (kept as written: alpha records are not rewritten), the fields
a history shows (``track_name``, ``artist_names`` as a JSON array of strings, ``release_name``,
``duration_s`` in seconds, ``music_service`` (``musicServiceUri``, or the alpha
``musicServiceBaseDomain``), ``client_agent``), the matching keys (``title_norm``: the track name
normalized by ``indexer.teal_play.normalize``; ``isrc``: upper case without hyphens), ``played_at``
(``playedTime``, else the TID record key's time, else ``indexed_at``) and ``sort_at`` (``played_at``
never later than ``indexed_at``), ``track_uri`` (the one of our tracks it is linked to, or NULL),
and ``duplicate`` (1 when the same play is already indexed from the other namespace, or the same
namespace at the same ``played_at``: it is listed and counted once; 2 when our own web app wrote it
as the copy of one of our plays, which is already listed and counted). Teal plays carry no heard
segments: they are never streams, never paid, never in charts; they are counted apart
(``tealPlays``).

``track.origin`` is NULL for our own ``fm.openmusic.catalog.track`` records and the collection NSID
for tracks indexed from another app (``fm.plyr.track``, ``indexer.plyr_track``).

``teal_scrobble`` holds the listeners who asked our web app to also write an ``fm.teal.feed.play``
for each of their plays (``did``, and ``enabled_at``, an atproto datetime); no row: off.

Two indexes serve the linking of a teal play to a track: ``track_title_nocase`` (title, ASCII case
folded) and ``record_track_isrc`` (the ISRC of our track records, upper case without hyphens).
"""

from yoyo import step

__depends__ = {"0021_shares"}

steps = [
    step("""CREATE TABLE teal_play (
        uri TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        collection TEXT NOT NULL,
        track_name TEXT NOT NULL,
        artist_names TEXT NOT NULL,
        release_name TEXT,
        duration_s INTEGER,
        music_service TEXT,
        client_agent TEXT,
        title_norm TEXT NOT NULL,
        isrc TEXT,
        played_at TEXT NOT NULL,
        sort_at TEXT NOT NULL,
        track_uri TEXT,
        duplicate INTEGER NOT NULL DEFAULT 0,
        indexed_at TEXT NOT NULL)""", "DROP TABLE teal_play"),
    step("CREATE INDEX teal_play_history ON teal_play(did, sort_at DESC, uri DESC)", "DROP INDEX teal_play_history"),
    step("CREATE INDEX teal_play_track ON teal_play(track_uri) WHERE track_uri IS NOT NULL",
         "DROP INDEX teal_play_track"),
    step("CREATE INDEX teal_play_title ON teal_play(title_norm)", "DROP INDEX teal_play_title"),
    step("CREATE INDEX teal_play_isrc ON teal_play(isrc) WHERE isrc IS NOT NULL", "DROP INDEX teal_play_isrc"),
    step("CREATE INDEX teal_play_same ON teal_play(did, title_norm, played_at)", "DROP INDEX teal_play_same"),
    step("CREATE TABLE teal_scrobble (did TEXT PRIMARY KEY, enabled_at TEXT NOT NULL)", "DROP TABLE teal_scrobble"),
    step("ALTER TABLE track ADD COLUMN origin TEXT", "ALTER TABLE track DROP COLUMN origin"),
    step("CREATE INDEX track_title_nocase ON track(title COLLATE NOCASE)", "DROP INDEX track_title_nocase"),
    step("CREATE INDEX record_track_isrc ON record(upper(replace(json_extract(json, '$.isrc'), '-', ''))) "
         "WHERE collection = 'fm.openmusic.catalog.track'", "DROP INDEX record_track_isrc"),
]
