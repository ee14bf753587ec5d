"""The label store: verified labels (``firehose.labels``) -> the ``label`` table, and what they do to
the catalog (``actor.hidden``, ``track.hidden``, ``album.hidden``, ``playlist.hidden``; migration
``0023_labels`` describes the tables).

Per the atproto Labels spec, one set of metadata is current per (src, uri, val): the one with the
latest ``cts``. A label older than the stored one is skipped (``stale``); a negation (``neg``)
replaces it and so withdraws it; an expired label (``exp`` passed) stops counting: the sweep
(``sweep``, run every ``SWEEP_S`` by ``run_sweeps``) brings the ``hidden`` flags in step.

Hiding levels (``level``): ``!takedown`` and ``!suspend`` 2 (never shown: every query's ``ACTIVE``
rule and record checks in ``appview.views``), ``!hide`` 1 (left out of lists, shown on direct
lookup), anything else 0 (carried in views only). An account at level 2 also stops counting as a
listener (``indexer.standing``): after each commit that may have changed ``actor.hidden`` the store
calls ``stats.catch_up_async``, which takes its plays, likes and votes out of the aggregates (or
puts them back).

Skipped and counted (``counters``, persisted in ``label_stat``): labels from labelers not
configured (``unknown_labeler``), for subjects we do not index (``unknown_subject``: a DID without
an ``actor`` row, an AT-URI without an indexed record), older than the stored one (``stale``);
except that a hiding label (``LEVELS``) or its negation on a subject not indexed yet is kept
(``pending_subject``): labels often arrive before the records (a new AppView backfills both at
once), and the record is hidden as soon as it is indexed;
and what the consumer counts through ``count`` (``bad_signature``, ``malformed``, ``bad_frame``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import aiosqlite

from core import periodic
from core.db import now_iso, write_transaction
from firehose.labels import Label, LabelerInfo
from indexer import stats

log = logging.getLogger("openmusic.labels")

#: Label values that hide their subject, and how far: 2 everywhere, 1 from lists.
LEVELS = {"!takedown": 2, "!suspend": 2, "!hide": 1}
#: Seconds between expiry sweeps.
SWEEP_S = 10.0
#: The tables whose ``hidden`` flag follows labels, with their key column.
HIDDEN_TABLES = (("actor", "did"), ("track", "uri"), ("album", "uri"), ("playlist", "uri"))


def level_of(val: str) -> int:
    """How far the label value ``val`` hides its subject: 2, 1 or 0 (``LEVELS``)."""
    return LEVELS.get(val, 0)


class LabelStore:
    """Stores labels and keeps the ``hidden`` flags in step, over a writer connection of its own
    (``conn``, from ``core.db.connect``). ``configured``: the labeler DIDs of ``Settings.labelers``.
    Call ``open()`` once before use. Safe to share among the consumers of several labelers."""

    def __init__(self, conn: aiosqlite.Connection, configured: list[str]) -> None:
        self.conn = conn
        self.configured = list(dict.fromkeys(configured))
        self.counters: Counter[str] = Counter()
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Record which labelers are configured (a labeler dropped from the setting stops counting,
        its labels kept), bring every ``hidden`` flag in step, and load the counters."""
        now = now_iso()
        async with self._lock:
            async with write_transaction(self.conn):
                await self.conn.execute("UPDATE labeler SET configured = 0")
                for did in self.configured:
                    await self.conn.execute(
                        "INSERT INTO labeler (did, configured, updated_at) VALUES (?, 1, ?) "
                        "ON CONFLICT (did) DO UPDATE SET configured = 1", (did, now))
                await self._refresh(None)
            await stats.catch_up_async(self.conn)
        cur = await self.conn.execute("SELECT name, n FROM label_stat")
        self.counters.update({name: n for name, n in await cur.fetchall()})

    async def load_cursor(self, src: str) -> int | None:
        """The ``seq`` of the last applied ``#labels`` frame of ``src``'s stream, or None."""
        cur = await self.conn.execute("SELECT cursor FROM labeler WHERE did = ?", (src,))
        row = await cur.fetchone()
        return row[0] if row else None

    async def save_labeler(self, info: LabelerInfo) -> None:
        """Remember ``info``'s endpoint and key (for operators; verification uses the live ones)."""
        async with self._lock:
            await self.conn.execute("UPDATE labeler SET endpoint = ?, signing_key = ?, updated_at = ? WHERE did = ?",
                                    (info.endpoint, info.key, now_iso(), info.did))

    async def reset_cursor(self, src: str) -> None:
        """Forget ``src``'s cursor: its next connection replays its whole stream (``FutureCursor``)."""
        async with self._lock:
            await self.conn.execute("UPDATE labeler SET cursor = NULL WHERE did = ?", (src,))
        self.counters["cursor_resets"] += 1

    async def count(self, reason: str, n: int = 1) -> None:
        """Count ``n`` skipped labels or frames under ``reason`` (in memory and in ``label_stat``)."""
        self.counters[reason] += n
        async with self._lock:
            await self.conn.execute("INSERT INTO label_stat (name, n) VALUES (?, ?) "
                                    "ON CONFLICT (name) DO UPDATE SET n = label_stat.n + excluded.n", (reason, n))

    async def apply(self, src: str, seq: int | None, labels: list[Label]) -> None:
        """Store ``labels`` (already verified as ``src``'s) and, when ``seq`` is given, ``src``'s
        cursor, in one transaction; then the ``hidden`` flags of their subjects. Labels that cannot
        count are skipped and counted (module docstring). Raises sqlite3 errors (the consumer
        retries the frame from its cursor)."""
        counts: Counter[str] = Counter()
        now = now_iso()
        async with self._lock:
            async with write_transaction(self.conn):
                touched: set[str] = set()
                for label in labels:
                    reason = await self._store(src, label, now)
                    counts[reason] += 1
                    if reason in ("applied", "negated"):
                        touched.add(label.uri)
                if touched:
                    await self._refresh(touched)
                if seq is not None:
                    await self.conn.execute("UPDATE labeler SET cursor = ?, updated_at = ? WHERE did = ?", (seq, now, src))
                for name, n in counts.items():
                    await self.conn.execute("INSERT INTO label_stat (name, n) VALUES (?, ?) "
                                            "ON CONFLICT (name) DO UPDATE SET n = label_stat.n + excluded.n", (name, n))
            await stats.catch_up_async(self.conn)
        self.counters.update(counts)

    async def _store(self, src: str, label: Label, now: str) -> str:
        """Upsert one label; the counter it falls under."""
        if label.src != src or src not in self.configured:
            return "unknown_labeler"
        if label.uri.startswith("did:"):
            cur = await self.conn.execute("SELECT 1 FROM actor WHERE did = ?", (label.uri,))
        else:
            cur = await self.conn.execute("SELECT 1 FROM record WHERE uri = ?", (label.uri,))
        known = await cur.fetchone() is not None
        if not known and level_of(label.val) == 0:
            return "unknown_subject"
        cur = await self.conn.execute("SELECT cts FROM label WHERE src = ? AND uri = ? AND val = ?",
                                      (label.src, label.uri, label.val))
        row = await cur.fetchone()
        if row is not None and row[0] > label.cts:
            return "stale"
        await self.conn.execute(
            "INSERT INTO label (src, uri, val, cid, neg, cts, exp, ver, sig, level, received_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (src, uri, val) DO UPDATE SET cid = excluded.cid, "
            "neg = excluded.neg, cts = excluded.cts, exp = excluded.exp, ver = excluded.ver, sig = excluded.sig, "
            "level = excluded.level, received_at = excluded.received_at",
            (label.src, label.uri, label.val, label.cid, 1 if label.neg else 0, label.cts, label.exp, label.ver,
             label.sig, level_of(label.val), now))
        if not known:
            return "pending_subject"  # hides it once it is indexed (the tables' insert triggers)
        return "negated" if label.neg else "applied"

    async def _refresh(self, uris: set[str] | None) -> int:
        """Set ``hidden`` from ``label_level`` for the subjects ``uris`` (None: every subject that is
        hidden or labelled). Returns the rows changed. Runs inside the caller's transaction."""
        changed = 0
        for table, key in HIDDEN_TABLES:
            level = f"COALESCE((SELECT level FROM label_level v WHERE v.uri = {table}.{key}), 0)"
            if uris is None:
                where, args = f"(hidden > 0 OR {key} IN (SELECT uri FROM label_level))", []
            else:
                marks = ",".join("?" * len(uris))
                where, args = f"{key} IN ({marks})", list(uris)
            cur = await self.conn.execute(f"UPDATE {table} SET hidden = {level} WHERE {where} AND hidden <> {level}", args)
            changed += cur.rowcount or 0
        return changed

    async def sweep(self) -> int:
        """Bring every ``hidden`` flag in step with the labels in force now (labels expire with time).
        Returns the rows changed."""
        async with self._lock:
            async with write_transaction(self.conn):
                changed = await self._refresh(None)
            await stats.catch_up_async(self.conn)
        if changed:
            self.counters["expiry_changes"] += changed
        return changed

    async def run_sweeps(self, every_s: float = SWEEP_S) -> None:
        """``sweep`` every ``every_s`` seconds until cancelled (``core.periodic.repeat``); a failed
        sweep is logged and retried."""
        await periodic.repeat("label expiry sweep", self.sweep, lambda _: every_s, every_s, log, first_wait=every_s)
