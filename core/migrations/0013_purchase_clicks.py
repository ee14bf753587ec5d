"""Clicks on a track's purchase link (``purchaseUrl`` of ``fm.openmusic.catalog.track``), counted per
track and UTC day when the web app sends a listener on to the store (``GET /buy/{did}/{rkey}``). The
analytics read them beside the money; nothing here is personal (no who, only how many)."""

from yoyo import step

__depends__ = {"0012_search_by_plays"}

steps = [
    step("""CREATE TABLE purchase_click (
        track_uri TEXT NOT NULL,
        did TEXT NOT NULL,
        day TEXT NOT NULL,
        clicks INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (track_uri, day)
    ) WITHOUT ROWID""", "DROP TABLE purchase_click"),
    step("CREATE INDEX purchase_click_did_day ON purchase_click(did, day)", "DROP INDEX purchase_click_did_day"),
]
