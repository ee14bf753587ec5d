"""Searches walk the FTS index newest first and stop after a page: each track gets a
``search_key`` (ordered like ``sort_at``, see ``indexer.search``) and the FTS table is rebuilt
with the key as its rowid (it was keyed by an unindexed ``uri`` column, which every search had
to read for every match, and every update had to scan for)."""

from yoyo import step

__depends__ = {"0004_payments"}


def fill_keys(conn) -> None:
    from indexer.search import key_base

    cur = conn.cursor()
    cur.execute("SELECT uri, sort_at FROM track ORDER BY sort_at, uri")
    rows = cur.fetchall()
    keys, last = [], None
    for uri, sort_at in rows:
        key = key_base(sort_at)
        if last is not None and key <= last:
            key = last + 1  # same millisecond: the next slot
        keys.append((key, uri))
        last = key
    cur.executemany("UPDATE track SET search_key = ? WHERE uri = ?", keys)


steps = [
    step("ALTER TABLE track ADD COLUMN search_key INTEGER"),
    step(fill_keys),
    step("CREATE UNIQUE INDEX track_search_key ON track(search_key)"),
    step("CREATE VIRTUAL TABLE track_fts_keyed USING fts5(body, tokenize='unicode61 remove_diacritics 2')"),
    step("INSERT INTO track_fts_keyed (rowid, body) SELECT t.search_key, max(f.body) FROM track_fts f "
         "JOIN track t ON t.uri = f.uri GROUP BY t.uri"),
    step("DROP TABLE track_fts"),
    step("ALTER TABLE track_fts_keyed RENAME TO track_fts"),
]
