"""Track facets for browsing and chart filters (``fm.openmusic.catalog.getBrowse``,
``feed.getChart``, issue 13): ``track_facet(track_uri, kind, value)`` holds each indexed track
record's moods (``kind = 'mood'``), the AI tools named in its disclosure (``'tool'``,
``aiDisclosure.tools``), the DIDs of its split recipients (``'split'``: their votes on it do not
count in the trending chart) and its ``releaseDate`` (``'release'``, in UTC as ``YYYY-MM-DDTHH:MM:SS.mmmZ``, like ``sort_at``), so that counting
and filtering by them never parses record JSON (``json_each`` over 100,000 track records takes
about 2 s). Moods and tools are trimmed and lower-cased; empty ones and repeats are dropped.

Kept in step by triggers on ``record`` (every indexed record; the indexer writes a track's row
there when it indexes it and deletes it when the track is deleted, updated, or its account purged),
not by indexer code; the backfill below fills it from the records already indexed."""

from yoyo import step

__depends__ = {"0016_votes_reviews_follows"}

TRACK = "fm.openmusic.catalog.track"


def _fill(source: str, uri: str) -> str:
    """INSERT of the facets of the track record(s) ``source`` selects (``uri`` and ``json`` columns)."""
    return f"""
        INSERT OR IGNORE INTO track_facet (track_uri, kind, value)
        SELECT {uri}, 'mood', lower(trim(j.value)) FROM {source} src, json_each(src.json, '$.moods') j
         WHERE j.type = 'text' AND trim(j.value) <> ''
        UNION ALL
        SELECT {uri}, 'tool', lower(trim(j.value)) FROM {source} src, json_each(src.json, '$.aiDisclosure.tools') j
         WHERE j.type = 'text' AND trim(j.value) <> ''
        UNION ALL
        SELECT DISTINCT {uri}, 'split', json_extract(j.value, '$.did') FROM {source} src, json_each(src.json, '$.splits') j
         WHERE json_type(j.value, '$.did') = 'text'
        UNION ALL
        SELECT {uri}, 'release', strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(src.json, '$.releaseDate'))
          FROM {source} src
         WHERE json_type(src.json, '$.releaseDate') = 'text'
           AND strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(src.json, '$.releaseDate')) IS NOT NULL"""


steps = [
    step("""CREATE TABLE track_facet (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        track_uri TEXT NOT NULL,
        PRIMARY KEY (kind, value, track_uri)) WITHOUT ROWID""", "DROP TABLE track_facet"),
    step("CREATE INDEX track_facet_track ON track_facet(track_uri, kind)", "DROP INDEX track_facet_track"),
    step(_fill(f"(SELECT uri, json FROM record WHERE collection = '{TRACK}')", "src.uri")),
    step(f"""CREATE TRIGGER track_facet_insert AFTER INSERT ON record WHEN NEW.collection = '{TRACK}' BEGIN
        {_fill("(SELECT NEW.json AS json)", "NEW.uri")};
        END""", "DROP TRIGGER track_facet_insert"),
    step(f"""CREATE TRIGGER track_facet_delete AFTER DELETE ON record WHEN OLD.collection = '{TRACK}' BEGIN
        DELETE FROM track_facet WHERE track_uri = OLD.uri;
        END""", "DROP TRIGGER track_facet_delete"),
]
