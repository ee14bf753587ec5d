"""Votes, reviews and follows (``fm.openmusic.social.vote``, ``social.review``, ``graph.follow``).

Each collection has its records (``vote``, ``review``, ``follow``: every indexed record, keyed by
AT-URI), the record that counts per (account, subject) (``*_current``: the account's latest by
``created_at`` then ``rkey``, only while the account is active) and counters per subject derived
from those (``vote_count``, ``review_count``, ``follow_count``), kept in step by ``indexer.stats``."""

from yoyo import step

__depends__ = {"0015_purchase_click_once"}

_RECORD = """uri TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        subject TEXT NOT NULL,"""
_STAMPS = """created_at TEXT NOT NULL,
        indexed_at TEXT NOT NULL"""
_CURRENT = """subject TEXT NOT NULL,
        did TEXT NOT NULL,
        uri TEXT NOT NULL,
        value INTEGER NOT NULL,
        sort_at TEXT NOT NULL,
        PRIMARY KEY (subject, did)"""

steps = [
    step(f"""CREATE TABLE vote (
        {_RECORD}
        subject_cid TEXT,
        direction TEXT NOT NULL,
        {_STAMPS}
    )""", "DROP TABLE vote"),
    step("CREATE INDEX vote_latest ON vote(did, subject, created_at, rkey)", "DROP INDEX vote_latest"),
    step(f"""CREATE TABLE review (
        {_RECORD}
        subject_cid TEXT,
        rating INTEGER NOT NULL,
        text TEXT,
        {_STAMPS}
    )""", "DROP TABLE review"),
    step("CREATE INDEX review_latest ON review(did, subject, created_at, rkey)", "DROP INDEX review_latest"),
    step(f"""CREATE TABLE follow (
        {_RECORD}
        {_STAMPS}
    )""", "DROP TABLE follow"),
    step("CREATE INDEX follow_latest ON follow(did, subject, created_at, rkey)", "DROP INDEX follow_latest"),
    # value: +1 up / -1 down; the rating; 1 for a follow
    step(f"CREATE TABLE vote_current ({_CURRENT}) WITHOUT ROWID", "DROP TABLE vote_current"),
    step(f"CREATE TABLE review_current ({_CURRENT}) WITHOUT ROWID", "DROP TABLE review_current"),
    step("CREATE INDEX review_current_page ON review_current(subject, sort_at, did)", "DROP INDEX review_current_page"),
    step("CREATE INDEX review_current_did ON review_current(did)", "DROP INDEX review_current_did"),
    step(f"CREATE TABLE follow_current ({_CURRENT}) WITHOUT ROWID", "DROP TABLE follow_current"),
    step("CREATE INDEX follow_current_page ON follow_current(subject, sort_at, did)", "DROP INDEX follow_current_page"),
    step("CREATE INDEX follow_current_did ON follow_current(did, sort_at, subject)", "DROP INDEX follow_current_did"),
    step("CREATE INDEX vote_current_did ON vote_current(did)", "DROP INDEX vote_current_did"),
    step("""CREATE TABLE vote_count (
        subject TEXT PRIMARY KEY,
        up INTEGER NOT NULL DEFAULT 0,
        down INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""", "DROP TABLE vote_count"),
    step("""CREATE TABLE review_count (
        subject TEXT PRIMARY KEY,
        reviews INTEGER NOT NULL DEFAULT 0,
        rating_sum INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""", "DROP TABLE review_count"),
    step("""CREATE TABLE follow_count (
        subject TEXT PRIMARY KEY,
        followers INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""", "DROP TABLE follow_count"),
]
