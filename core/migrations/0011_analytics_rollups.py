"""Analytics rollups (``fm.openmusic.analytics.*``, issue 12), kept by the indexer in the same
transaction as the plays (``indexer.rollups``): ``track_day`` (per track and UTC day: plays, paid
and free streams, ms heard, plays with segments), ``track_day_listener`` (per track, day, listener
and country: exact unique listeners over any range; listeners numbered in ``analytics_listener``)
and ``track_second`` (per track and second,
as a difference array: plays that heard it, that heard it twice, segments that ended in it).
``play.replayed`` holds the parts of a play heard twice or more (its raw segments overlap), which
the merged ``play.segments`` cannot tell.

The backfill is written out here rather than imported from the indexer, so that this migration
stays what it was when later code changes; ``openmusic analytics check`` compares the result with
the indexer's own recount (``tests/test_analytics.py`` does too)."""

import json

from yoyo import step

__depends__ = {"0010_tips_by_payer"}

MAX_SECOND = 86_400
ACTIVE = "(a.active IS NULL OR a.active = 1)"


def _replayed(segments):
    events = []
    for seg in segments or []:
        if isinstance(seg, dict) and isinstance(seg.get("startMs"), int) and isinstance(seg.get("endMs"), int):
            if seg["endMs"] > seg["startMs"]:
                events += [(seg["startMs"], 1), (seg["endMs"], -1)]
    events.sort()
    out, depth, opened = [], 0, 0
    for pos, step_ in events:
        before, depth = depth, depth + step_
        if before < 2 <= depth:
            opened = pos
        elif depth < 2 <= before and pos > opened:
            if out and out[-1][1] == opened:
                out[-1][1] = pos
            else:
                out.append([opened, pos])
    return out or None


def _seconds(intervals):
    out = []
    for start, end in sorted(intervals or []):
        if end <= start or start // 1000 >= MAX_SECOND:
            continue
        first, after = start // 1000, min(-(-end // 1000), MAX_SECOND)
        if out and first <= out[-1][1]:
            out[-1][1] = max(out[-1][1], after)
        else:
            out.append([first, after])
    return out


def _histogram(acc, segments, replayed):
    def bump(second, col, n):
        if second < MAX_SECOND:
            acc.setdefault(second, [0, 0, 0])[col] += n
    for col, intervals in ((0, segments), (1, replayed)):
        for first, after in _seconds(intervals):
            bump(first, col, 1)
            bump(after, col, -1)
    for start, end in segments or []:
        if end > start:
            bump((end - 1) // 1000, 2, 1)


def fill_replayed(conn) -> None:
    cur = conn.cursor()
    cur.execute("SELECT p.uri, json_extract(r.json, '$.segments') FROM play p JOIN record r ON r.uri = p.uri "
                "WHERE json_type(r.json, '$.segments') = 'array'")
    updates = []
    for uri, raw in cur.fetchall():
        again = _replayed(json.loads(raw))
        if again:
            updates.append((json.dumps(again, separators=(",", ":")), uri))
    cur.executemany("UPDATE play SET replayed = ? WHERE uri = ?", updates)


def fill_rollups(conn) -> None:
    cur = conn.cursor()
    cur.execute(f"INSERT INTO track_day (track_uri, day, plays, paid_streams, free_streams, listened_ms, segmented) "
                f"SELECT p.track_uri, substr(p.sort_at, 1, 10), COUNT(*), SUM(p.stream AND p.paid), "
                f"SUM(p.stream AND NOT p.paid), SUM(COALESCE(p.heard_ms, 0)), SUM(p.segments IS NOT NULL) "
                f"FROM play p LEFT JOIN actor a ON a.did = p.did WHERE {ACTIVE} GROUP BY 1, 2")
    cur.execute("INSERT OR IGNORE INTO analytics_listener (did) SELECT DISTINCT did FROM play")
    cur.execute(f"INSERT INTO track_day_listener (track_uri, day, listener, country, plays, streams, listened_ms) "
                f"SELECT p.track_uri, substr(p.sort_at, 1, 10), i.id, COALESCE(p.country, ''), COUNT(*), "
                f"SUM(p.stream), SUM(COALESCE(p.heard_ms, 0)) FROM play p JOIN analytics_listener i ON i.did = p.did "
                f"LEFT JOIN actor a ON a.did = p.did WHERE {ACTIVE} GROUP BY 1, 2, 3, 4")
    read = conn.cursor()
    read.execute(f"SELECT p.track_uri, p.segments, p.replayed FROM play p LEFT JOIN actor a ON a.did = p.did "
                 f"WHERE p.segments IS NOT NULL AND {ACTIVE} ORDER BY p.track_uri")
    current, acc, rows = None, {}, []

    def flush():
        rows.extend((current, s, *v) for s, v in sorted(acc.items()) if any(v))
        if len(rows) >= 50_000:
            cur.executemany("INSERT INTO track_second (track_uri, second, heard, replayed, stops) VALUES (?,?,?,?,?)",
                            rows)
            rows.clear()
    for track_uri, segments, replayed in read:
        if track_uri != current:
            flush()
            current, acc = track_uri, {}
        _histogram(acc, json.loads(segments), json.loads(replayed) if replayed else None)
    flush()
    cur.executemany("INSERT INTO track_second (track_uri, second, heard, replayed, stops) VALUES (?,?,?,?,?)", rows)


steps = [
    step("ALTER TABLE play ADD COLUMN replayed TEXT"),
    step("""CREATE TABLE track_day (
        track_uri TEXT NOT NULL,
        day TEXT NOT NULL,
        plays INTEGER NOT NULL DEFAULT 0,
        paid_streams INTEGER NOT NULL DEFAULT 0,
        free_streams INTEGER NOT NULL DEFAULT 0,
        listened_ms INTEGER NOT NULL DEFAULT 0,
        segmented INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (track_uri, day)) WITHOUT ROWID"""),
    # listeners by number: counting distinct integers is about twice as fast as distinct DIDs
    step("""CREATE TABLE analytics_listener (
        id INTEGER PRIMARY KEY,
        did TEXT NOT NULL UNIQUE)"""),
    step("""CREATE TABLE track_day_listener (
        track_uri TEXT NOT NULL,
        day TEXT NOT NULL,
        listener INTEGER NOT NULL,
        country TEXT NOT NULL,
        plays INTEGER NOT NULL DEFAULT 0,
        streams INTEGER NOT NULL DEFAULT 0,
        listened_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (track_uri, day, listener, country)) WITHOUT ROWID"""),
    step("""CREATE TABLE track_second (
        track_uri TEXT NOT NULL,
        second INTEGER NOT NULL,
        heard INTEGER NOT NULL DEFAULT 0,
        replayed INTEGER NOT NULL DEFAULT 0,
        stops INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (track_uri, second)) WITHOUT ROWID"""),
    step(fill_replayed),
    step(fill_rollups),
]
