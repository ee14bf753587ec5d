"""Fake plays must not take the ad pool (issue 10, item 11): a play earns only when its track is
indexed, for at most what the track lasts (and the union of the segments heard), dated honestly,
within the listener's caps per UTC day (``indexer.streams``); likes count once per account and
only for indexed tracks; ``listened_ms`` in stats is capped by the duration (``indexer.stats``).

New: ``play.heard_ms`` (the capped ms heard; NULL while the track is not indexed: decided when it
appears), ``play.segments`` (the merged segments heard, JSON), table ``listener_day`` (stream weight
per listener and UTC day). Every existing play is decided again under the new rules, in
``sort_at`` order, and the stats recounted. Periods already closed keep their ledger entries."""

from yoyo import step

__depends__ = {"0006_streams_and_subscriptions"}


def fill_segments(conn) -> None:
    import json

    from indexer.streams import merge_segments

    cur = conn.cursor()
    cur.execute("SELECT p.uri, json_extract(r.json, '$.segments') FROM play p JOIN record r ON r.uri = p.uri "
                "WHERE json_type(r.json, '$.segments') = 'array'")
    updates = []
    for uri, raw in cur.fetchall():
        merged = merge_segments(json.loads(raw))
        if merged:
            updates.append((json.dumps(merged, separators=(",", ":")), uri))
    cur.executemany("UPDATE play SET segments = ? WHERE uri = ?", updates)


def decide_again(conn) -> None:
    from indexer import stats, streams

    streams.reevaluate_all(conn)
    stats.recount_all(conn)


steps = [
    step("ALTER TABLE play ADD COLUMN heard_ms INTEGER"),
    step("ALTER TABLE play ADD COLUMN segments TEXT"),
    step("""CREATE TABLE listener_day (
        did TEXT NOT NULL,
        day TEXT NOT NULL,
        stream_ms INTEGER NOT NULL,
        PRIMARY KEY (did, day)) WITHOUT ROWID"""),
    # the plays waiting for their track; a listener's streams of one track on one day (the daily cap)
    step("CREATE INDEX play_pending ON play(track_uri) WHERE heard_ms IS NULL"),
    step("DROP INDEX IF EXISTS play_listener_track"),
    step("CREATE INDEX play_listener_track_streams ON play(did, track_uri, sort_at) WHERE stream = 1"),
    # an account's likes of one subject (counted once)
    step("CREATE INDEX like_did_subject ON like_record(did, subject_uri)"),
    step(fill_segments),
    step(decide_again),
]
