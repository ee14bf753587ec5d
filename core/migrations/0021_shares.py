"""Bluesky posts that share an Open Music page (issue 13, the feed generator): ``share`` holds one
row per indexed ``app.bsky.feed.post`` whose card, link facet or text points at one of our track,
album or playlist pages (``indexer.share``): the post's ``uri``, author ``did``, ``rkey`` and
``cid``, the ``subject`` it shares (our record's AT-URI, resolved from the page URL), the post's
``created_at`` and ``sort_at`` (its createdAt, never later than ``indexed_at``: newest first in the
feeds, ties broken by ``uri``), and ``indexed_at``. Rows go with their record (delete, update,
account purge), like every indexed collection."""

from yoyo import step

__depends__ = {"0017_track_facets"}

steps = [
    step("""CREATE TABLE share (
        uri TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        subject TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sort_at TEXT NOT NULL,
        indexed_at TEXT NOT NULL)""", "DROP TABLE share"),
    step("CREATE INDEX share_sort ON share(sort_at DESC, uri DESC)", "DROP INDEX share_sort"),
    step("CREATE INDEX share_author ON share(did, sort_at DESC, uri DESC)", "DROP INDEX share_author"),
    step("CREATE INDEX share_subject ON share(subject)", "DROP INDEX share_subject"),
]
