"""Chart totals computed once by the leader and read by every replica (issue 15: many AppView
replicas). Each replica computed them itself, per filter, every minute: trending's reputation
weighing is a minute of Python at 5M plays, and a period's top sums ``track_day`` over every
track (seconds on PostgreSQL at a million tracks). ``appview.charts.keep_chart_totals`` fills
``chart_total`` (``chart``: ``trending``, ``top:day``, ``top:week``, ``top:month``; track URI ->
score, an integer) and stamps its row in ``derived_state`` (what was computed, for which UTC day,
when in epoch seconds, and how long it took); ``getChart`` ranks the stored totals while they are
fresh, reading ``chart_total_rank`` from the highest score until the chart's 1,000 tracks that pass
the filters are found. Runs on SQLite and PostgreSQL alike."""

from yoyo import step

__depends__ = {"0035_pg_listed_statistics"}

steps = [
    step("CREATE TABLE chart_total (chart TEXT NOT NULL, track_uri TEXT NOT NULL, score BIGINT NOT NULL, "
         "PRIMARY KEY (chart, track_uri))",
         "DROP TABLE chart_total"),
    step("CREATE INDEX chart_total_rank ON chart_total(chart, score DESC)", "DROP INDEX chart_total_rank"),
    step("CREATE TABLE derived_state (name TEXT PRIMARY KEY, day TEXT NOT NULL, "
         "computed_at DOUBLE PRECISION NOT NULL, seconds DOUBLE PRECISION NOT NULL)",
         "DROP TABLE derived_state"),
]
