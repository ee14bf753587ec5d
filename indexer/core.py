"""The indexer: firehose events -> database rows, one transaction per batch of events.

Each batch commits its writes together with the firehose cursor (the seq of its last event), so
after a crash the consumer resumes exactly where the durable state ends: no gap, no double effect.
Within a batch each record op runs in its own SAVEPOINT: a record that fails validation or
indexing is skipped and counted (table ``rejected_record``) and never stops the stream.

Per repo we keep ``repo_state`` (sync spec, "Record-Level Synchronization"): the last applied
``rev`` and MST root, and whether the repo is ``synchronized`` or ``desynchronized``. A commit at
or below the stored rev is ignored; one whose ``since`` or ``prevData`` does not follow what we
hold, a newer ``#sync``, ``#info OutdatedCursor`` or a reactivation marks the repo desynchronized
and asks for a resync (``indexer.resync``). While a repo resyncs, its live commits are buffered
and replayed after the snapshot in the same transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import aiosqlite

from firehose.car import cid_str
from firehose.events import AccountEvent, CommitEvent, Event, IdentityEvent, InfoEvent, RecordOp, SyncEvent
from firehose.repo import Snapshot
from firehose.verify import Verifier
from indexer import album, like, play, profile, stats, track
from indexer.base import WriteContext
from openmusic.db import now_iso
from openmusic.lexicons import RecordInvalid, to_json, validate_record, validator

log = logging.getLogger("openmusic.indexer")

#: One module per collection: ``COLLECTION``, ``check(record)``, ``insert(ctx, record)``, ``delete(ctx)``.
MODULES = {m.COLLECTION: m for m in (track, album, profile, play, like)}
#: Record key syntax (atproto record-key spec): TID.
TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
SYNCHRONIZED, DESYNCHRONIZED = "synchronized", "desynchronized"


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
    """Applies batches of firehose events, and resync snapshots, to the database.

    ``conn`` is a writer connection (``openmusic.db.connect``) used only by this object, under
    ``lock``; ``source`` is the cursor key (``Settings.cursor_source``); ``on_new_did(did)`` is
    called after a commit for DIDs whose identity should be (re)resolved; ``on_desync(did)`` for
    repos that need a resync. ``counters`` and ``rejections`` hold running totals.
    """

    def __init__(self, conn: aiosqlite.Connection, source: str,
                 on_new_did: Callable[[str], None] | None = None, verifier: Verifier | None = None,
                 on_desync: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self.source = source
        self.verifier = verifier
        self.on_new_did = on_new_did
        self.on_desync = on_desync
        self.lock = asyncio.Lock()
        self.counters: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        #: repos with a ``repo_state`` row: their every commit is followed
        self.tracked: set[str] = set()
        #: repos being resynced -> their live commits, buffered until the snapshot is applied
        self.resyncing: dict[str, list[CommitEvent]] = {}

    async def load_state(self) -> list[str]:
        """Load the tracked repos; returns those still owed a resync."""
        cur = await self.conn.execute("SELECT did, status FROM repo_state")
        rows = await cur.fetchall()
        self.tracked = {r[0] for r in rows}
        return [r[0] for r in rows if r[1] == DESYNCHRONIZED]

    def is_tracked(self, did: str) -> bool:
        """Whether ``did``'s commits must be decoded in full (the decoder's ``tracked`` predicate)."""
        return did in self.tracked

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
        touched: set[str] = set()
        desynced: set[str] = set()
        async with self.lock:
            await self._transaction(self._apply_events(events, cursor, touched, desynced))
        self._after(touched, desynced)

    async def _apply_events(self, events: list[Event], cursor: int | None, touched: set[str],
                            desynced: set[str]) -> None:
        now = now_iso()
        for evt in events:
            if isinstance(evt, CommitEvent):
                await self._commit(evt, now, touched, desynced)
            elif isinstance(evt, AccountEvent):
                await self._account(evt, desynced)
            elif isinstance(evt, IdentityEvent):
                await self._identity(evt, touched)
            elif isinstance(evt, SyncEvent):
                await self._sync(evt, desynced)
            elif isinstance(evt, InfoEvent) and evt.name == "OutdatedCursor":
                await self._mark_all_desynchronized(desynced)
            self.counters["events"] += 1
        if cursor is not None:
            await self.conn.execute(
                "INSERT INTO cursor (source, seq, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
                (self.source, cursor, now))

    async def _transaction(self, work: Any) -> None:
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            await work
            await self.conn.execute("COMMIT")
        except BaseException:
            await self.conn.execute("ROLLBACK")
            raise

    def _after(self, touched: set[str], desynced: set[str]) -> None:
        if self.on_new_did:
            for did in touched:
                self.on_new_did(did)
        if self.on_desync:
            for did in desynced:
                self.on_desync(did)

    async def _state(self, did: str) -> tuple[str, str | None, str] | None:
        cur = await self.conn.execute("SELECT rev, data_cid, status FROM repo_state WHERE did = ?", (did,))
        row = await cur.fetchone()
        return (row[0], row[1], row[2]) if row else None

    async def _inactive(self, did: str) -> bool:
        cur = await self.conn.execute("SELECT 1 FROM actor WHERE did = ? AND active = 0", (did,))
        return await cur.fetchone() is not None

    async def _commit(self, evt: CommitEvent, now: str, touched: set[str], desynced: set[str]) -> None:
        if evt.did in self.resyncing:
            self.resyncing[evt.did].append(evt)
            self.counters["buffered_commits"] += 1
            return
        state = await self._state(evt.did)
        if state is None and not evt.ops:
            return  # a repo we do not follow, and nothing of ours in this commit
        if state and state[0] and evt.rev <= state[0]:
            self.counters["stale_commits"] += 1  # replayed or out of order: already applied
            return
        if await self._inactive(evt.did):
            self.counters["inactive_commits"] += 1  # sync spec: ignore commits of accounts not active
            return
        if evt.rejected:
            self.counters["rejected_commits"] += 1
            for op in evt.ops:
                await self._reject(evt.did, op, evt.rejected, evt.rejected_detail or evt.rejected, now)
            return
        if state:
            if state[2] == DESYNCHRONIZED:
                self.counters["skipped_desynchronized"] += 1  # the owed resync brings this commit
                return
            prev_data = cid_str(evt.prev_data) if evt.prev_data else None
            if (evt.since and state[0] and evt.since != state[0]) or (prev_data and state[1] and prev_data != state[1]):
                log.warning("repo %s desynchronized: since %s / prevData %s do not follow rev %s / data %s",
                            evt.did, evt.since, prev_data, state[0], state[1])
                await self._mark_desynchronized(evt.did, desynced)
                return
        cur = await self.conn.execute("INSERT OR IGNORE INTO actor (did) VALUES (?)", (evt.did,))
        if cur.rowcount:
            touched.add(evt.did)
        for op in evt.ops:
            if evt.blocks_error:
                await self._reject(evt.did, op, "bad_car", evt.blocks_error, now)
                continue
            await self.apply_op(evt.did, op, evt.rev, now)
        await self._set_state(evt.did, evt.rev, evt.commit, cid_str(evt.data) if evt.data else None, now)

    async def _set_state(self, did: str, rev: str, commit: str | None, data: str | None, now: str) -> None:
        await self.conn.execute(
            "INSERT INTO repo_state (did, rev, commit_cid, data_cid, status, updated_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, commit_cid = excluded.commit_cid, "
            "data_cid = excluded.data_cid, status = excluded.status, resync_attempts = 0, next_attempt = NULL, "
            "last_error = NULL, updated_at = excluded.updated_at", (did, rev, commit, data, SYNCHRONIZED, now))
        self.tracked.add(did)

    async def _mark_desynchronized(self, did: str, desynced: set[str]) -> None:
        await self.conn.execute(
            "INSERT INTO repo_state (did, rev, status, updated_at) VALUES (?, '', ?, ?) "
            "ON CONFLICT (did) DO UPDATE SET status = excluded.status, next_attempt = NULL",
            (did, DESYNCHRONIZED, now_iso()))
        self.tracked.add(did)
        self.counters["desynchronized"] += 1
        desynced.add(did)

    async def _mark_all_desynchronized(self, desynced: set[str]) -> None:
        log.warning("firehose cursor is outdated: events were missed, every followed repo will be resynced")
        await self.conn.execute("UPDATE repo_state SET status = ?, next_attempt = NULL", (DESYNCHRONIZED,))
        self.counters["desynchronized"] += len(self.tracked)
        desynced.update(self.tracked)

    async def mark_desynchronized(self, dids: Iterable[str]) -> None:
        """Mark repos as owed a resync (e.g. discovered by backfill) in their own transaction."""
        desynced: set[str] = set()

        async def work() -> None:
            for did in dids:
                await self._mark_desynchronized(did, desynced)
        async with self.lock:
            await self._transaction(work())
        self._after(set(), desynced)

    async def apply_op(self, did: str, op: RecordOp, rev: str | None, now: str) -> None:
        """Apply one record op (create / update / delete) inside the open transaction, in a
        SAVEPOINT: an invalid record is rejected and counted, never raised."""
        module = MODULES[op.collection]
        ctx = WriteContext(self.conn, did, op.collection, op.rkey, op.cid, rev, now)
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
                    (ctx.uri, did, op.collection, op.rkey, op.cid, rev,
                     json.dumps(to_json(op.record), separators=(",", ":")), now))
                self.counters["records_indexed"] += 1
            await self.conn.execute("RELEASE op")
        except RecordInvalid as exc:
            await self.conn.execute("RELEASE op")  # keep the removal of the old version: it is no longer valid
            await self._reject(did, op, exc.reason, str(exc), now)
        except (KeyError, TypeError, ValueError, aiosqlite.IntegrityError) as exc:
            await self.conn.execute("ROLLBACK TO op")
            await self.conn.execute("RELEASE op")
            await self._reject(did, op, "index_error", f"{type(exc).__name__}: {exc}", now)

    async def _remove(self, ctx: WriteContext, module: Any) -> bool:
        """Delete the indexed version of ``ctx.uri`` (updates are delete-then-insert). True if one existed."""
        cur = await self.conn.execute("DELETE FROM record WHERE uri = ?", (ctx.uri,))
        if cur.rowcount:
            await module.delete(ctx)
            return True
        return False

    async def _reject(self, did: str, op: RecordOp, reason: str, detail: str, now: str) -> None:
        uri = f"at://{did}/{op.collection}/{op.rkey}"
        cur = await self.conn.execute(
            "INSERT INTO rejected_record (uri, cid, reason, detail, rejected_at) SELECT ?,?,?,?,? WHERE NOT EXISTS "
            "(SELECT 1 FROM rejected_record WHERE uri = ? AND cid IS ? AND reason = ?)",
            (uri, op.cid, reason, detail[:2000], now, uri, op.cid, reason))
        if cur.rowcount:
            self.rejections[reason] += 1
            log.warning("skipping invalid record %s (%s): %s", uri, reason, detail)

    async def _account(self, evt: AccountEvent, desynced: set[str]) -> None:
        # Only accounts we index: the network's other accounts are not our business.
        cur = await self.conn.execute("SELECT active FROM actor WHERE did = ?", (evt.did,))
        row = await cur.fetchone()
        if not row:
            return
        was_active = bool(row[0])
        await self.conn.execute("UPDATE actor SET active = ?, status = ? WHERE did = ?",
                                (1 if evt.active else 0, evt.status, evt.did))
        if was_active != evt.active:
            await stats.count_account(self.conn, evt.did, 1 if evt.active else -1)
        if not evt.active and evt.status == "deleted":
            await self.purge_account(evt.did)
        elif evt.active and not was_active and evt.did in self.tracked:
            await self._mark_desynchronized(evt.did, desynced)  # reactivated: catch up on what changed

    async def _identity(self, evt: IdentityEvent, touched: set[str]) -> None:
        cur = await self.conn.execute("UPDATE actor SET resolved_at = NULL WHERE did = ?", (evt.did,))
        if cur.rowcount:
            touched.add(evt.did)

    async def _sync(self, evt: SyncEvent, desynced: set[str]) -> None:
        if evt.did not in self.tracked or evt.did in self.resyncing or await self._inactive(evt.did):
            return
        state = await self._state(evt.did)
        if state and (not state[0] or evt.rev > state[0]) and state[2] != DESYNCHRONIZED:
            await self._mark_desynchronized(evt.did, desynced)

    async def purge_account(self, did: str) -> int:
        """Delete every indexed record of ``did`` (account deleted), keeping aggregates consistent.
        Runs inside the caller's transaction. Returns the number of records removed."""
        cur = await self.conn.execute("SELECT active FROM actor WHERE did = ?", (did,))
        row = await cur.fetchone()
        if row and not row[0]:
            await stats.count_account(self.conn, did, 1)  # its removal below uncounts it once more
        cur = await self.conn.execute("SELECT collection, rkey FROM record WHERE did = ?", (did,))
        rows = await cur.fetchall()
        now = now_iso()
        for collection, rkey in rows:
            module = MODULES.get(collection)
            if module:
                await self._remove(WriteContext(self.conn, did, collection, rkey, None, None, now), module)
        await self.conn.execute("DELETE FROM repo_state WHERE did = ?", (did,))
        self.tracked.discard(did)
        self.counters["records_purged"] += len(rows)
        return len(rows)

    # -- resync ---------------------------------------------------------------------------------

    def begin_resync(self, did: str) -> None:
        """Start buffering ``did``'s live commits (call before fetching its repo)."""
        self.resyncing.setdefault(did, [])

    async def apply_snapshot(self, snap: Snapshot) -> Counter[str]:
        """Make the index of ``snap.did`` equal the verified snapshot (creates, updates, deletes),
        mark the repo synchronized at the snapshot's rev, then replay the commits buffered since
        ``begin_resync`` that are newer, all in one transaction. Returns the changes by kind."""
        changes: Counter[str] = Counter()
        touched: set[str] = set()
        desynced: set[str] = set()

        async def work() -> None:
            now = now_iso()
            cur = await self.conn.execute("SELECT collection, rkey, cid FROM record WHERE did = ?", (snap.did,))
            current = {f"{c}/{r}": cid for c, r, cid in await cur.fetchall()}
            await self.conn.execute("INSERT OR IGNORE INTO actor (did) VALUES (?)", (snap.did,))
            for path, (cid, record) in snap.records.items():
                collection, _, rkey = path.partition("/")
                if collection not in MODULES or current.get(path) == cid:
                    continue
                action = "update" if path in current else "create"
                await self.apply_op(snap.did, RecordOp(action, collection, rkey, cid, record), snap.rev, now)
                changes[action] += 1
            for path in current.keys() - snap.records.keys():
                collection, _, rkey = path.partition("/")
                if collection in MODULES:
                    await self.apply_op(snap.did, RecordOp("delete", collection, rkey, None), snap.rev, now)
                    changes["delete"] += 1
            await self._set_state(snap.did, snap.rev, None, cid_str(snap.data), now)
            for evt in buffered:
                await self._commit(evt, now, touched, desynced)
                changes["replayed"] += 1

        async with self.lock:
            buffered = self.resyncing.pop(snap.did, [])
            try:
                await self._transaction(work())
            except BaseException:
                self.resyncing.setdefault(snap.did, [])  # keep buffering until the retry
                raise
        self.counters["resyncs"] += 1
        self._after(touched, desynced)
        return changes

    async def resync_failed(self, did: str, error: str, retry_in_s: float) -> None:
        """Record a failed resync; the repo stays desynchronized and is retried after ``retry_in_s``."""
        async with self.lock:
            self.resyncing.pop(did, None)
            await self.conn.execute(
                "UPDATE repo_state SET resync_attempts = resync_attempts + 1, next_attempt = ?, last_error = ? "
                "WHERE did = ?", (time.time() + retry_in_s, error[:500], did))
        self.counters["resync_failures"] += 1
