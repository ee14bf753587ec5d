"""Notifications (``fm.openmusic.notification.*``, issue 13): ``notification_seen`` holds, per
account (``did``), the time up to which it has read its notifications (``seen_at``, UTC
``YYYY-MM-DDTHH:MM:SS.mmmZ`` like ``sort_at``; written by ``notification.updateSeen`` and by the web
app's notifications page; ``updated_at`` when it last moved). The notifications themselves are not
stored: they are computed when asked from the tables the indexer keeps (``follow_current``,
``track``, ``album``, ``tip`` with its ``settlement``).

``settlement_subject`` lets "tips received since" walk an artist's settlements by when they were
indexed, instead of every tip they ever got."""

from yoyo import step

__depends__ = {"0017_track_facets"}

steps = [
    step("""CREATE TABLE notification_seen (
        did TEXT PRIMARY KEY,
        seen_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID""", "DROP TABLE notification_seen"),
    step("CREATE INDEX settlement_subject ON settlement(subject, indexed_at, uri)", "DROP INDEX settlement_subject"),
]
