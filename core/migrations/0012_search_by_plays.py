"""Search sorted by plays without touching every match's rows: ``track_rank`` holds, per FTS row ID
(the track's ``search_key``), the track's play count and URI, so a search for a common word sorts
small integer rows and hydrates only the page it returns (``appview.queries.search_tracks``).

Kept in step: ``indexer.search`` writes and removes a track's row with its FTS row, and a trigger
copies ``track_stats.plays`` whenever it changes (every path that counts plays goes through that
column, including account deactivation and the migrations that recount)."""

from yoyo import step

__depends__ = {"0010_tips_by_payer"}

steps = [
    step("""CREATE TABLE track_rank (
        search_key INTEGER PRIMARY KEY,
        plays INTEGER NOT NULL DEFAULT 0,
        uri TEXT NOT NULL)""", "DROP TABLE track_rank"),
    step("INSERT INTO track_rank (search_key, plays, uri) SELECT t.search_key, COALESCE(s.plays, 0), t.uri "
         "FROM track t LEFT JOIN track_stats s ON s.track_uri = t.uri WHERE t.search_key IS NOT NULL"),
    step("""CREATE TRIGGER track_rank_plays AFTER UPDATE OF plays ON track_stats BEGIN
        UPDATE track_rank SET plays = NEW.plays
         WHERE search_key = (SELECT search_key FROM track WHERE uri = NEW.track_uri);
        END""", "DROP TRIGGER track_rank_plays"),
]
