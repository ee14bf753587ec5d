"""Every indexed track has a ``track_stats`` row, so "sort by plays" can walk the plays index."""

from yoyo import step

__depends__ = {"0002_sync_state"}

steps = [step("INSERT OR IGNORE INTO track_stats (track_uri) SELECT uri FROM track")]
