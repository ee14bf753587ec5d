"""The trending chart's totals, computed once by the leader and read by every replica (issue 15:
many AppView replicas; each computed them itself, seconds of Python at a million plays, every
minute). ``appview.charts.keep_trending`` fills ``trending_total`` (track URI -> score, integer
thousandths) and stamps its row in ``derived_state`` (what was computed, for which UTC day, when in
epoch seconds, and how long it took); ``getChart`` ranks the stored totals while they are fresh.
Runs on SQLite and PostgreSQL alike."""

from yoyo import step

__depends__ = {"0035_pg_listed_statistics"}

steps = [
    step("CREATE TABLE trending_total (track_uri TEXT PRIMARY KEY, score BIGINT NOT NULL)",
         "DROP TABLE trending_total"),
    step("CREATE TABLE derived_state (name TEXT PRIMARY KEY, day TEXT NOT NULL, "
         "computed_at DOUBLE PRECISION NOT NULL, seconds DOUBLE PRECISION NOT NULL)",
         "DROP TABLE derived_state"),
]
