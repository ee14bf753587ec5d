"""Reputation-weighted votes (issue 13, ``appview.reputation``).

- ``actor.first_seen``: when this AppView first saw the account (UTC, ``YYYY-MM-DDTHH:MM:SS.mmmZ``),
  set by a trigger when the indexer creates the row; existing rows get their earliest indexed record.
  ``actor.plc_created_at``: when the account's DID was created, from the PLC directory's audit log,
  when known. Account age is taken from the PLC time when known, else from ``first_seen``: both are
  observations no account can backdate.
- ``profile.bot``: 1 when the profile record carries the self-label ``bot`` (an automated account,
  an AI agent): its votes count in the separate agent score.
- ``reputation``: the per-account signals that need a scan of history, recomputed periodically by
  ``appview.reputation.refresh``: ``farm`` (listening no person produces) with its reason, how the
  account's past votes agreed with the eventual consensus (``judged`` votes, ``agreed`` of them), and
  ``history_days``: on how many UTC days it streamed (``listener_day``), at most 30.
- ``reputation_host``: per PDS domain, how many established accounts it hosts (a small host's new
  accounts voting alike count as one).
- ``vote_current_hour``: the index that counts an account's votes in a UTC hour (the rate limit);
  ``track_day_listener_day``: the trending chart's window of listeners by day."""

from yoyo import step

__depends__ = {"0017_track_facets"}

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

steps = [
    step("ALTER TABLE actor ADD COLUMN first_seen TEXT", "ALTER TABLE actor DROP COLUMN first_seen"),
    step("ALTER TABLE actor ADD COLUMN plc_created_at TEXT", "ALTER TABLE actor DROP COLUMN plc_created_at"),
    step(f"UPDATE actor SET first_seen = COALESCE((SELECT MIN(r.indexed_at) FROM record r WHERE r.did = actor.did), {NOW})"),
    step(f"""CREATE TRIGGER actor_first_seen AFTER INSERT ON actor WHEN NEW.first_seen IS NULL BEGIN
        UPDATE actor SET first_seen = {NOW} WHERE did = NEW.did;
    END""", "DROP TRIGGER actor_first_seen"),
    step("ALTER TABLE profile ADD COLUMN bot INTEGER NOT NULL DEFAULT 0", "ALTER TABLE profile DROP COLUMN bot"),
    step("""UPDATE profile SET bot = 1 WHERE EXISTS (
        SELECT 1 FROM record r, json_each(r.json, '$.labels.values') l
        WHERE r.uri = profile.uri AND json_valid(r.json) AND json_extract(l.value, '$.val') = 'bot')"""),
    step("""CREATE TABLE reputation (
        did TEXT PRIMARY KEY,
        farm INTEGER NOT NULL DEFAULT 0,
        farm_reason TEXT,
        judged INTEGER NOT NULL DEFAULT 0,
        agreed INTEGER NOT NULL DEFAULT 0,
        history_days INTEGER NOT NULL DEFAULT 0,
        computed_at TEXT NOT NULL
    ) WITHOUT ROWID""", "DROP TABLE reputation"),
    step("CREATE INDEX reputation_farm ON reputation(did) WHERE farm = 1", "DROP INDEX reputation_farm"),
    step("""CREATE TABLE reputation_host (
        domain TEXT PRIMARY KEY,
        established INTEGER NOT NULL
    ) WITHOUT ROWID""", "DROP TABLE reputation_host"),
    step("CREATE INDEX track_day_listener_day ON track_day_listener(day)", "DROP INDEX track_day_listener_day"),
    step("CREATE INDEX vote_current_hour ON vote_current(did, sort_at)", "DROP INDEX vote_current_hour"),
]
