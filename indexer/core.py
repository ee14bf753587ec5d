"""The indexer: firehose events -> database rows, one transaction per batch of events.

Each batch commits its writes together with the firehose cursor (the seq of its last event), so
after a crash the consumer resumes exactly where the durable state ends: no gap, no double effect.
Within a batch each record op runs in its own SAVEPOINT: a record that fails validation or
indexing is skipped and counted (table ``rejected_record``) and never stops the stream.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import aiosqlite

from firehose.events import AccountEvent, CommitEvent, Event, IdentityEvent, RecordOp
from firehose.verify import Verifier
from indexer import album, like, play, profile, track
from indexer.base import WriteContext
from openmusic.db import now_iso
from openmusic.lexicons import RecordInvalid, to_json, validate_record, validator

log = logging.getLogger("openmusic.indexer")

#: One module per collection: ``COLLECTION``, ``check(record)``, ``insert(ctx, record)``, ``delete(ctx)``.
MODULES = {m.COLLECTION: m for m in (track, album, profile, play, like)}
#: Record key syntax (atproto record-key spec): TID.
TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def wanted(collection: str) -> bool:
    """True for the collections we index."""
    return collection in MODULES


def check_rkey(collection: str, rkey: str) -> None:
    """Check ``rkey`` against the lexicon's ``key`` (``tid`` or ``literal:<value>``). Raises ``RecordInvalid``."""
    key = validator().defs[collection].get("key", "any")
    if key == "tid" and not TID_RE.match(rkey):
        raise RecordInvalid("bad_rkey", f"record key {rkey!r} is not a TID")
    if key.startswith("literal:") and rkey != key[len("literal:"):]:
        raise RecordInvalid("bad_rkey", f"record key {rkey!r} must be {key[len('literal:'):]!r}")


class Indexer:
    """Applies batches of firehose events to the database.

    ``conn`` is a writer connection (``openmusic.db.connect``) used only by this object;
    ``source`` is the cursor key (``Settings.cursor_source``); ``on_new_did(did)`` is called
    after a commit for DIDs whose identity should be (re)resolved. ``counters`` holds running
    totals: events, records indexed / deleted, rejections by reason, stale commits.
    """

    def __init__(self, conn: aiosqlite.Connection, source: str,
                 on_new_did: Callable[[str], None] | None = None, verifier: Verifier | None = None) -> None:
        self.conn = conn
        self.verifier = verifier
        self.source = source
        self.on_new_did = on_new_did
        self.counters: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()

    async def load_cursor(self) -> int | None:
        """The last durably applied seq for this source, or None when we never read it."""
        cur = await self.conn.execute("SELECT seq FROM cursor WHERE source = ?", (self.source,))
        row = await cur.fetchone()
        return int(row[0]) if row else None

    async def apply(self, events: Iterable[Event], cursor: int | None) -> None:
        """Apply ``events`` in order and store ``cursor`` (the seq to resume after), atomically.

        Commits are verified first (``firehose.verify``), outside the transaction. Raises on
        database failure (after rolling the whole batch back) and ``RetryLater`` when a signing
        key cannot be fetched for now.
        """
        events = list(events)
        if self.verifier:
            await self.verifier.check_batch(events)
        now = now_iso()
        touched: set[str] = set()
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            for evt in events:
                if isinstance(evt, CommitEvent):
                    await self._commit(evt, now, touched)
                elif isinstance(evt, AccountEvent):
                    await self._account(evt)
                elif isinstance(evt, IdentityEvent):
                    await self._identity(evt, touched)
                self.counters["events"] += 1
            if cursor is not None:
                await self.conn.execute(
                    "INSERT INTO cursor (source, seq, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
                    (self.source, cursor, now))
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise
        if self.on_new_did:
            for did in touched:
                self.on_new_did(did)

    async def _commit(self, evt: CommitEvent, now: str, touched: set[str]) -> None:
        if not evt.ops:
            return
        cur = await self.conn.execute("SELECT rev FROM repo_state WHERE did = ?", (evt.did,))
        row = await cur.fetchone()
        if row and evt.rev <= row[0]:
            self.counters["stale_commits"] += 1  # replayed or out of order: already applied
            return
        if evt.rejected:
            self.counters["rejected_commits"] += 1
            for op in evt.ops:
                await self._reject(evt.did, op, evt.rejected, evt.rejected_detail or evt.rejected, now)
            return
        cur = await self.conn.execute("INSERT OR IGNORE INTO actor (did) VALUES (?)", (evt.did,))
        if cur.rowcount:
            touched.add(evt.did)
        for op in evt.ops:
            if evt.blocks_error:
                await self._reject(evt.did, op, "bad_car", evt.blocks_error, now)
                continue
            await self._op(evt, op, now)
        await self.conn.execute(
            "INSERT INTO repo_state (did, rev, commit_cid, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, commit_cid = excluded.commit_cid, "
            "updated_at = excluded.updated_at", (evt.did, evt.rev, evt.commit, now))

    async def _op(self, evt: CommitEvent, op: RecordOp, now: str) -> None:
        module = MODULES[op.collection]
        ctx = WriteContext(self.conn, evt.did, op.collection, op.rkey, op.cid, evt.rev, now)
        await self.conn.execute("SAVEPOINT op")
        try:
            existed = await self._remove(ctx, module)
            if op.action == "delete":
                if existed:
                    self.counters["records_deleted"] += 1
            else:
                if op.record is None:
                    raise RecordInvalid("missing_block", f"record block {op.cid} is not in the commit")
                check_rkey(op.collection, op.rkey)
                validate_record(op.collection, op.record)
                module.check(op.record)
                await module.insert(ctx, op.record)
                await self.conn.execute(
                    "INSERT INTO record (uri, did, collection, rkey, cid, rev, json, indexed_at) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (ctx.uri, evt.did, op.collection, op.rkey, op.cid, evt.rev,
                     json.dumps(to_json(op.record), separators=(",", ":")), now))
                self.counters["records_indexed"] += 1
            await self.conn.execute("RELEASE op")
        except RecordInvalid as exc:
            await self.conn.execute("RELEASE op")  # keep the removal of the old version: it is no longer valid
            await self._reject(evt.did, op, exc.reason, str(exc), now)
        except (KeyError, TypeError, ValueError, aiosqlite.IntegrityError) as exc:
            await self.conn.execute("ROLLBACK TO op")
            await self.conn.execute("RELEASE op")
            await self._reject(evt.did, op, "index_error", f"{type(exc).__name__}: {exc}", now)

    async def _remove(self, ctx: WriteContext, module: Any) -> bool:
        """Delete the indexed version of ``ctx.uri`` (updates are delete-then-insert). True if one existed."""
        cur = await self.conn.execute("DELETE FROM record WHERE uri = ?", (ctx.uri,))
        if cur.rowcount:
            await module.delete(ctx)
            return True
        return False

    async def _reject(self, did: str, op: RecordOp, reason: str, detail: str, now: str) -> None:
        uri = f"at://{did}/{op.collection}/{op.rkey}"
        self.rejections[reason] += 1
        log.warning("skipping invalid record %s (%s): %s", uri, reason, detail)
        await self.conn.execute(
            "INSERT INTO rejected_record (uri, cid, reason, detail, rejected_at) VALUES (?,?,?,?,?)",
            (uri, op.cid, reason, detail[:2000], now))

    async def _account(self, evt: AccountEvent) -> None:
        # Only accounts we index: the network's other accounts are not our business.
        cur = await self.conn.execute("UPDATE actor SET active = ?, status = ? WHERE did = ?",
                                      (1 if evt.active else 0, evt.status, evt.did))
        if cur.rowcount and not evt.active and evt.status == "deleted":
            await self.purge_account(evt.did)

    async def _identity(self, evt: IdentityEvent, touched: set[str]) -> None:
        cur = await self.conn.execute("UPDATE actor SET resolved_at = NULL WHERE did = ?", (evt.did,))
        if cur.rowcount:
            touched.add(evt.did)

    async def purge_account(self, did: str) -> int:
        """Delete every indexed record of ``did`` (account deleted), keeping aggregates consistent.
        Runs inside the caller's transaction. Returns the number of records removed."""
        cur = await self.conn.execute("SELECT collection, rkey FROM record WHERE did = ?", (did,))
        rows = await cur.fetchall()
        now = now_iso()
        for collection, rkey in rows:
            module = MODULES.get(collection)
            if module:
                await self._remove(WriteContext(self.conn, did, collection, rkey, None, None, now), module)
        await self.conn.execute("DELETE FROM repo_state WHERE did = ?", (did,))
        self.counters["records_purged"] += len(rows)
        return len(rows)
