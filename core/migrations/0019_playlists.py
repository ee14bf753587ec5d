"""Playlists (``fm.openmusic.catalog.playlist``, ``catalog.playlistItem``, issue 13).

- ``playlist``: every indexed playlist record (keyed by AT-URI): title, description, artwork blob CID and declared type,
  ``sort_at`` (``min(createdAt, indexed_at)``: orders an owner's playlists).
- ``playlist_entry``: the owner's items of each playlist, one row per index in the record's
  ``items`` (``position`` from 0), with the track's strongRef; kept whether or not the track is
  indexed (the queries show only those that resolve).
- ``playlist_collaborator``: the DIDs a playlist lists in ``collaborators`` (``position``: the
  record's order).
- ``playlist_item``: every indexed collaborator item record (in the collaborator's repo), whoever
  wrote it: ``subject`` is the playlist's AT-URI; it is shown only while the playlist lists its
  author (a join with ``playlist_collaborator`` at query time, so adding or removing a
  collaborator needs no rewrite)."""

from yoyo import step

__depends__ = {"0017_track_facets"}

steps = [
    step("""CREATE TABLE playlist (
        uri TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        title TEXT NOT NULL,
        description TEXT,
        artwork_cid TEXT,
        artwork_mime TEXT,
        created_at TEXT NOT NULL,
        sort_at TEXT NOT NULL,
        indexed_at TEXT NOT NULL
    )""", "DROP TABLE playlist"),
    step("CREATE INDEX playlist_by_owner ON playlist(did, sort_at, uri)", "DROP INDEX playlist_by_owner"),
    step("""CREATE TABLE playlist_entry (
        playlist_uri TEXT NOT NULL,
        position INTEGER NOT NULL,
        track_uri TEXT NOT NULL,
        track_cid TEXT NOT NULL,
        PRIMARY KEY (playlist_uri, position)
    ) WITHOUT ROWID""", "DROP TABLE playlist_entry"),
    step("""CREATE TABLE playlist_collaborator (
        playlist_uri TEXT NOT NULL,
        did TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (playlist_uri, did)
    ) WITHOUT ROWID""", "DROP TABLE playlist_collaborator"),
    step("CREATE INDEX playlist_collaborator_did ON playlist_collaborator(did)", "DROP INDEX playlist_collaborator_did"),
    step("""CREATE TABLE playlist_item (
        uri TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        subject TEXT NOT NULL,
        track_uri TEXT NOT NULL,
        track_cid TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sort_at TEXT NOT NULL,
        indexed_at TEXT NOT NULL
    )""", "DROP TABLE playlist_item"),
    step("CREATE INDEX playlist_item_page ON playlist_item(subject, sort_at, uri)", "DROP INDEX playlist_item_page"),
    step("CREATE INDEX playlist_item_did ON playlist_item(did, subject)", "DROP INDEX playlist_item_did"),
]
