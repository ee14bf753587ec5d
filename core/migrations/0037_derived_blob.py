"""Derived blobs the leader computes once for every replica (issue 15): the recommendation model
(``appview.recommend.keep_model``), which each replica built for itself before (minutes of CPU
and gigabytes at a million tracks). ``appview.derived`` writes a blob in parts of at most 8 MB
under its name and stamp (``computed_at``, epoch seconds, as in its ``derived_state`` row) and
reads the parts of one stamp only. ``BLOB`` on SQLite, ``BYTEA`` on PostgreSQL."""

from core.migration_steps import per_engine

__depends__ = {"0036_chart_totals"}

_TABLE = ("CREATE TABLE derived_blob (name TEXT NOT NULL, part INTEGER NOT NULL, "
          "stamp DOUBLE PRECISION NOT NULL, data {} NOT NULL, PRIMARY KEY (name, part))")

steps = [
    per_engine(sqlite=_TABLE.format("BLOB"), postgresql=_TABLE.format("BYTEA"),
               sqlite_rollback="DROP TABLE derived_blob", postgresql_rollback="DROP TABLE derived_blob"),
]
