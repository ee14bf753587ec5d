"""Moderation through labels, step 1 (issue 14; atproto Labels spec, ``com.atproto.label.defs``).

``labeler`` holds one row per labeler DID the operator configured (``Settings.labelers``), ever:
``configured`` (1 while it is in the setting; labels of a labeler no longer configured stay stored
but count for nothing), its ``#atproto_labeler`` ``endpoint`` and ``#atproto_label`` ``signing_key``
(a ``did:key``) as last resolved, and ``cursor``: the ``seq`` of the last ``#labels`` frame of its
``com.atproto.label.subscribeLabels`` stream applied (the stream resumes after it, as the firehose
resumes from ``cursor``).

``label`` holds the current state of each (``src``, ``uri``, ``val``): the labeler's DID, the
subject (a DID for an account, an AT-URI for a record) and the value. Per the spec only one set of
metadata is current for that triple, the one with the latest ``cts`` (creation time, an atproto
datetime normalized to ``YYYY-MM-DDTHH:MM:SS.mmmZ``): a label older than the stored one is ignored.
``neg`` is 1 when the latest word was a negation (the row stays, so an older label replayed later
cannot come back); ``exp`` (normalized like ``cts``, or NULL) is when it stops applying; ``cid``
the record version it names (NULL: any); ``ver`` and ``sig`` (the 64-byte signature) as received;
``level`` what it does to the subject: 2 hides it everywhere (``!takedown``, ``!suspend``), 1 hides
it from lists (``!hide``), 0 nothing (other values travel in views only); ``received_at``.

``label_level`` (a view) is the hiding level in force per subject: the highest ``level`` of its
labels that are not negated, not expired and from a configured labeler. ``actor.hidden``,
``track.hidden``, ``album.hidden`` and ``playlist.hidden`` hold that level for accounts and records
(0: shown), kept in step by ``indexer.labels.LabelStore`` (on each label, and by a periodic sweep
for expiry) and, through triggers, when a row is (re)inserted by the indexer: a takedown stored
before its subject was indexed (``pending_subject``) applies as soon as it is.

``label_stat`` counts what the label consumers did, by ``name`` (``applied``, ``bad_signature``,
``unknown_labeler``, ``unknown_subject``, ``malformed``, ``stale``, ``bad_frame``, ...).
"""

from yoyo import step

__depends__ = {"0022_interop"}

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def _trigger(table: str, key: str) -> str:
    return (f"CREATE TRIGGER {table}_label_hidden AFTER INSERT ON {table} BEGIN "
            f"UPDATE {table} SET hidden = COALESCE((SELECT level FROM label_level WHERE uri = NEW.{key}), 0) "
            f"WHERE {key} = NEW.{key}; END")


steps = [
    step("""CREATE TABLE labeler (
        did TEXT PRIMARY KEY,
        configured INTEGER NOT NULL DEFAULT 1,
        endpoint TEXT,
        signing_key TEXT,
        cursor INTEGER,
        updated_at TEXT NOT NULL)""", "DROP TABLE labeler"),
    step("""CREATE TABLE label (
        src TEXT NOT NULL,
        uri TEXT NOT NULL,
        val TEXT NOT NULL,
        cid TEXT,
        neg INTEGER NOT NULL DEFAULT 0,
        cts TEXT NOT NULL,
        exp TEXT,
        ver INTEGER,
        sig BLOB,
        level INTEGER NOT NULL DEFAULT 0,
        received_at TEXT NOT NULL,
        PRIMARY KEY (src, uri, val))""", "DROP TABLE label"),
    step("CREATE INDEX label_uri ON label (uri)"),
    step("CREATE INDEX label_exp ON label (exp) WHERE exp IS NOT NULL AND neg = 0"),
    step(f"""CREATE VIEW label_level AS
        SELECT l.uri AS uri, MAX(l.level) AS level FROM label l
        JOIN labeler b ON b.did = l.src AND b.configured = 1
        WHERE l.neg = 0 AND l.level > 0 AND (l.exp IS NULL OR l.exp > {_NOW})
        GROUP BY l.uri""", "DROP VIEW label_level"),
    step("""CREATE TABLE label_stat (
        name TEXT PRIMARY KEY,
        n INTEGER NOT NULL DEFAULT 0)""", "DROP TABLE label_stat"),
    step("ALTER TABLE actor ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE track ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE album ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0"),
    step("ALTER TABLE playlist ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0"),
    step(_trigger("actor", "did"), "DROP TRIGGER actor_label_hidden"),
    step(_trigger("track", "uri"), "DROP TRIGGER track_label_hidden"),
    step(_trigger("album", "uri"), "DROP TRIGGER album_label_hidden"),
    step(_trigger("playlist", "uri"), "DROP TRIGGER playlist_label_hidden"),
]
