"""Sync 1.1 state per repo (MST root, desynchronized / synchronized, resync backoff) and backfill progress."""

from yoyo import step

__depends__ = {"0001_initial"}

steps = [
    step("ALTER TABLE repo_state ADD COLUMN data_cid TEXT"),
    # synchronized | desynchronized (a resync is owed: chain broken, #sync, OutdatedCursor, reactivation, backfill)
    step("ALTER TABLE repo_state ADD COLUMN status TEXT NOT NULL DEFAULT 'synchronized'"),
    step("ALTER TABLE repo_state ADD COLUMN resync_attempts INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE repo_state ADD COLUMN next_attempt REAL"),
    step("ALTER TABLE repo_state ADD COLUMN last_error TEXT"),
    step("CREATE INDEX repo_state_status ON repo_state(status, next_attempt)"),
    # repo_state.rev may now be empty for a repo discovered by backfill and not yet imported
    step("""CREATE TABLE backfill (
        source TEXT PRIMARY KEY,
        cursor TEXT,
        listed INTEGER NOT NULL DEFAULT 0,
        complete INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL)"""),
]
