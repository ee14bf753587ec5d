"""The indexer: firehose events -> database rows, one transaction per batch of events.

Each batch commits its writes together with the firehose cursor (the seq of its last event), so
after a crash the consumer resumes exactly where the durable state ends: no gap, no double effect.
Within a batch each record op runs in its own SAVEPOINT: a record that fails validation or
indexing, or makes any code on its way raise (whatever its content), is skipped and counted (table
``rejected_record``) and never stops the stream. Only database failures (busy, I/O, disk full)
abort a batch, to be retried from the cursor. An event whose handling raises otherwise is rolled
back alone, counted (``event_errors``) and its repo marked desynchronized.

Per repo we keep ``repo_state`` (sync spec, "Record-Level Synchronization"): the last applied
``rev`` and MST root, and whether the repo is ``synchronized`` or ``desynchronized``. A commit at
or below the stored rev is ignored; one whose ``since`` or ``prevData`` does not follow what we
hold, a newer ``#sync``, ``#info OutdatedCursor`` or a reactivation marks the repo desynchronized
and asks for a resync (``indexer.resync``). While a repo resyncs, its live commits are buffered
and replayed after the snapshot in the same transaction.

The database work of a batch is plain ``sqlite3`` code run in one hop to the indexer's own
writer thread: one thread switch per batch instead of one per statement (the aiosqlite way),
which is what lets a single process keep up with the network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from core.db import connect_sync, now_iso, sort_at
from core.lexicons import RecordInvalid, check_data_model, to_json, validate_record, validator
from firehose.car import cid_str
from firehose.events import (
    AccountEvent,
    CommitEvent,
    Event,
    IdentityEvent,
    InfoEvent,
    RecordOp,
    Selection,
    SyncEvent,
)
from firehose.repo import Snapshot
from firehose.verify import Verifier
from indexer import (
    album,
    follow,
    like,
    play,
    playlist,
    playlist_item,
    plyr_track,
    profile,
    review,
    search,
    settlement,
    share,
    stats,
    streams,
    teal_alpha_play,
    teal_play,
    tip,
    track,
    vote,
)
from indexer.base import WriteContext

log = logging.getLogger("openmusic.indexer")

#: One module per collection: ``COLLECTION``, ``check(record)``, ``insert(ctx, record)``, ``delete(ctx)``.
MODULES = {m.COLLECTION: m for m in (track, album, profile, play, like, vote, review, follow, tip, settlement, playlist,
                                     playlist_item, share, teal_play, teal_alpha_play, plyr_track)}
#: The collections all of whose records are ours (our namespace): backfill discovers repos by these
#: (``listReposByCollection``); never by ``app.bsky.feed.post``, which every Bluesky account has.
OWN_COLLECTIONS = tuple(sorted(c for c, m in MODULES.items() if getattr(m, "LEXICON", True)))
#: Record key syntax (atproto record-key spec): TID.
TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
SYNCHRONIZED, DESYNCHRONIZED = "synchronized", "desynchronized"
T = TypeVar("T")
#: SQLite primary result codes that mean the database, not the data, failed: the batch is rolled
#: back and retried (BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, CORRUPT, FULL, CANTOPEN,
#: PROTOCOL, NOTADB). Any other SQLite error raised by one record rejects that record.
#: DIDs per statement when a batch reads its repos' ``repo_state`` (``Indexer._load_states``)
STATE_CHUNK = 500
SQLITE_INFRA_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})


def database_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the database itself (retry the batch) rather than of the data."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__module__.startswith("psycopg"):
        from core import pg
        return pg.is_infrastructure_error(exc)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # raised by the sqlite3 module itself (binding a bad type: the data's fault)
            return isinstance(exc, sqlite3.OperationalError)
        return (code & 0xFF) in SQLITE_INFRA_CODES
    return False


class _Careful(Exception):  # noqa: N818 (a signal, not an error)
    """Raised inside an optimistic batch (``Indexer._apply_batch``) by what a SAVEPOINT would have
    rolled back: the batch is applied again, each event and record in its own savepoint."""


def _pipeline_aborted(exc: BaseException) -> bool:
    """Whether ``exc`` is psycopg's ``PipelineAborted``: an earlier statement of the pipeline failed
    (an ``OperationalError`` by class, but the data's doing, not the database's)."""
    return type(exc).__name__ == "PipelineAborted"


def describe(exc: BaseException) -> str:
    """``Type: message (file:line in function)`` of the innermost frame: one line, whatever the stack."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        f = frames[-1]
        where = f" ({f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name})"
    return f"{type(exc).__name__}: {str(exc)[:500]}{where}"


def ours(collection: str) -> bool:
    """True for the collections we index."""
    return collection in MODULES


#: Drops every ``app.bsky.feed.post`` that shares nothing of ours, at the decoder (one per process:
#: each ``Indexer`` adds the authors of its indexed shares).
SHARES = share.ShareFilter()
#: What the decoder keeps (the ``wanted`` of ``decode_frame`` and the consumer): our collections, and
#: of ``app.bsky.feed.post`` only the posts that link to our pages (``indexer.share``).
wanted = Selection(ours, {share.COLLECTION: SHARES})


def check_foreign(collection: str, rkey: str, record: Any) -> None:
    """Checks for a record of another namespace, whose lexicon we do not hold (a module with
    ``LEXICON = False``, e.g. ``app.bsky.feed.post``): a map of data model values within bounds,
    ``$type`` equal to the collection, a TID record key; the module's ``check`` validates the fields
    it reads. Raises ``RecordInvalid``."""
    if not isinstance(record, dict):
        raise RecordInvalid("not_object", "record is not a map")
    check_data_model(record)
    if record.get("$type") != collection:
        raise RecordInvalid("wrong_type", f"$type {record.get('$type')!r} does not match collection {collection}")
    if not TID_RE.match(rkey):
        raise RecordInvalid("bad_rkey", f"record key {rkey!r} is not a TID")


def check_rkey(collection: str, rkey: str) -> None:
    """Check ``rkey`` against the lexicon's ``key`` (``tid`` or ``literal:<value>``). Raises ``RecordInvalid``."""
    key = validator().defs[collection].get("key", "any")
    if key == "tid" and not TID_RE.match(rkey):
        raise RecordInvalid("bad_rkey", f"record key {rkey!r} is not a TID")
    if key.startswith("literal:") and rkey != key[len("literal:"):]:
        raise RecordInvalid("bad_rkey", f"record key {rkey!r} must be {key[len('literal:'):]!r}")


class Indexer:
    """Applies batches of firehose events, and resync snapshots, to the database.

    It owns a ``sqlite3`` writer connection to ``db_path``, used only from its single worker
    thread (``run``), under ``lock``; call ``open()`` first and ``close()`` at the end. ``source`` is the cursor key (``Settings.cursor_source``); ``on_new_did(did)`` is
    called after a commit for DIDs whose identity should be (re)resolved; ``on_desync(did)`` for
    repos that need a resync. ``counters`` and ``rejections`` hold running totals.
    """

    def __init__(self, db_path: str, source: str,
                 on_new_did: Callable[[str], None] | None = None, verifier: Verifier | None = None,
                 on_desync: Callable[[str], None] | None = None) -> None:
        self.db_path = db_path
        self.conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="indexer")
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
        #: accounts known not to be active (their commits are ignored)
        self.inactive: set[str] = set()
        #: the decoder's filter of ``app.bsky.feed.post`` (``SHARES``) and selection (``wanted``)
        self.share_filter = SHARES
        self.selection = wanted
        #: called as ``fence(conn)`` in the writer thread just before each COMMIT; raising aborts the
        #: transaction (rolled back). The runtime sets it on PostgreSQL so that a leader which lost its
        #: lock (``core.leader``) cannot commit a batch after a standby took over.
        self.fence: Callable[[Any], None] | None = None
        #: while a batch is applied optimistically (``_apply_batch``): no SAVEPOINT per event and per
        #: record, and on PostgreSQL pipeline mode; anything but a rejection raises ``_Careful``
        self._optimistic = False
        #: (cursor of the ``actor`` insert, DID) of the optimistic batch, read at its end (``touched``)
        self._new_actors: list[tuple[Any, str]] = []
        #: the ``repo_state`` of the optimistic batch's repos, read in one statement at its start and
        #: kept up to date by its writes (``_state``); None outside one (read from the database)
        self._states: dict[str, tuple[str, str | None, str] | None] | None = None
        #: what the optimistic batch's new plays need for their stream decisions, read at its start
        #: (``streams.BatchFacts``); dropped at its first op or event that may change those facts
        self._facts: streams.BatchFacts | None = None

    async def open(self) -> None:
        """Open the writer connection (in the worker thread)."""
        self.conn = await self.run(connect_sync, self.db_path)

    async def close(self) -> None:
        """Close the writer connection and stop the worker thread."""
        if self.conn is not None:
            await self.run(self.conn.close)
            self.conn = None
        self._thread.shutdown(wait=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the indexer's writer thread (where ``self.conn`` may be used)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def query(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """Rows of one statement on the writer connection (call through ``run``)."""
        assert self.conn is not None
        return self.conn.execute(sql, args).fetchall()

    async def sql(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """One statement (autocommit) in the writer thread, between batches; returns its rows."""
        return await self.run(self.query, sql, args)

    async def load_state(self) -> list[str]:
        """Load the tracked repos and inactive accounts; returns the repos still owed a resync."""
        rows = await self.sql("SELECT did, status FROM repo_state")
        self.tracked = {r[0] for r in rows}
        self.inactive = {r[0] for r in await self.sql("SELECT did FROM actor WHERE active = 0")}
        self.share_filter.authors.update(r[0] for r in await self.sql("SELECT DISTINCT did FROM share"))
        return [r[0] for r in rows if r[1] == DESYNCHRONIZED]

    def is_tracked(self, did: str) -> bool:
        """Whether ``did``'s commits must be decoded in full (the decoder's ``tracked`` predicate)."""
        return did in self.tracked

    async def load_cursor(self) -> int | None:
        """The last durably applied seq for this source, or None when we never read it."""
        rows = await self.sql("SELECT seq FROM cursor WHERE source = ?", (self.source,))
        return int(rows[0][0]) if rows else None

    async def prepare(self, events: list[Event]) -> None:
        """Verify the batch's commits (``firehose.verify``); safe to run while the previous batch is
        being applied. Raises ``RetryLater`` when a signing key cannot be fetched for now."""
        if self.verifier:
            await self.verifier.check_batch(events)

    async def apply(self, events: Iterable[Event], cursor: int | None, prepared: bool = False) -> None:
        """Apply ``events`` in order and store ``cursor`` (the seq to resume after), atomically.

        Unless ``prepared``, commits are verified first (``prepare``), outside the transaction.
        Raises on database failure (after rolling the whole batch back) and ``RetryLater`` when a
        signing key cannot be fetched for now.
        """
        events = list(events)
        if not prepared:
            await self.prepare(events)
        touched: set[str] = set()
        desynced: set[str] = set()
        async with self.lock:
            await self.run(self._apply_batch, events, cursor, touched, desynced)
        self._after(touched, desynced)

    def _apply_batch(self, events: list[Event], cursor: int | None, touched: set[str], desynced: set[str]) -> None:
        """Apply a batch in one transaction, optimistically first: without the SAVEPOINT per event
        and per record (on PostgreSQL, in pipeline mode: statements whose result nobody reads do not
        wait for it). Rejections (``RecordInvalid``) keep what they kept with savepoints (the removal
        of the old version), so they need none. If anything else raises (what a savepoint would roll
        back: an indexing error, an event error), the transaction is rolled back, the in-memory state
        restored, and the batch applied again the careful way, each event and record in its own
        SAVEPOINT (``_guarded``, ``apply_op``): the same result as applying it that way at once.
        Database failures propagate (the batch is retried from the cursor)."""
        # the decoder (on the event loop) may begin resyncs and add share authors meanwhile: the
        # buffers are cut back to their length, never replaced, and the authors (which only grow) kept
        saved = (self.counters.copy(), self.rejections.copy(), {d: len(v) for d, v in self.resyncing.items()})
        try:
            self._transaction(self._apply_optimistic, events, cursor, touched, desynced)
            return
        except _Careful as exc:
            log.info("batch ending at seq %s applied again record by record: %s", cursor, describe(exc.__cause__ or exc))
        self.counters, self.rejections = saved[0], saved[1]  # (metrics: an increment on the loop meanwhile is lost)
        for did, buffered in list(self.resyncing.items()):  # the batch's commits out of the buffers again
            del buffered[saved[2].get(did, 0):]
        touched.clear()
        desynced.clear()
        self._transaction(self._apply_events, events, cursor, touched, desynced)
        self.counters["careful_batches"] += 1

    def _apply_optimistic(self, events: list[Event], cursor: int | None, touched: set[str],
                          desynced: set[str]) -> None:
        pipeline = getattr(self.conn, "pipeline", None)  # core.pg.SyncConnection: PostgreSQL
        self._optimistic, self._new_actors = True, []
        now = now_iso()
        try:
            if pipeline is None:
                self._states, self._facts = self._load_states(events), self._load_facts(events, now)
                self._apply_events(events, cursor, touched, desynced, now)
            else:
                try:
                    with pipeline():
                        self._states, self._facts = self._load_states(events), self._load_facts(events, now)
                        self._apply_events(events, cursor, touched, desynced, now)
                        self._read_new_actors(touched)
                except _Careful:
                    raise
                except Exception as exc:  # a statement nobody waited for failed: it surfaces at the sync
                    if database_failure(exc) and not _pipeline_aborted(exc):
                        raise
                    raise _Careful("a statement of the batch failed") from exc
            self._read_new_actors(touched)
        finally:
            self._optimistic, self._new_actors, self._states, self._facts = False, [], None, None

    def _load_facts(self, events: list[Event], now: str) -> streams.BatchFacts | None:
        """``streams.BatchFacts`` for the new plays among ``events`` (None when there are none)."""
        keys = []
        for evt in events:
            if not isinstance(evt, CommitEvent):
                continue
            for op in evt.ops:
                if op.collection == play.COLLECTION and op.action == "create" and isinstance(op.record, dict):
                    try:
                        keys.append((evt.did, op.record["track"]["uri"], sort_at(op.record["createdAt"], now)[:10]))
                    except (KeyError, TypeError, ValueError, AttributeError):
                        continue  # an invalid play: rejected when its turn comes
        keys = [k for k in keys if isinstance(k[1], str)]
        return streams.BatchFacts(self.conn, keys) if keys else None

    def _load_states(self, events: list[Event]) -> dict[str, tuple[str, str | None, str] | None]:
        """``repo_state`` (rev, data CID, status) of the repos of ``events``' commits that may touch
        the database, None for those without one: a few statements per batch instead of one per
        commit (each of which would wait for the server on PostgreSQL)."""
        dids = sorted({e.did for e in events if isinstance(e, CommitEvent) and (e.ops or e.did in self.tracked)})
        states: dict[str, tuple[str, str | None, str] | None] = dict.fromkeys(dids)
        for i in range(0, len(dids), STATE_CHUNK):
            chunk = dids[i:i + STATE_CHUNK]
            rows = self.conn.execute("SELECT did, rev, data_cid, status FROM repo_state WHERE did IN "
                                     f"({','.join('?' * len(chunk))})", chunk).fetchall()
            for did, rev, data, status in rows:
                states[did] = (rev, data, status)
        return states

    def _read_new_actors(self, touched: set[str]) -> None:
        for cur, did in self._new_actors:
            if cur.rowcount:
                touched.add(did)
        self._new_actors = []

    def _apply_events(self, events: list[Event], cursor: int | None, touched: set[str],
                      desynced: set[str], now: str | None = None) -> None:
        now = now or now_iso()
        for evt in events:
            if not (isinstance(evt, CommitEvent) and not evt.ops and evt.did not in self.tracked):
                self._guarded(self._event, evt, now, touched, desynced)  # (most of the network: nothing to do)
            self.counters["events"] += 1
        if cursor is not None:
            self.conn.execute(
                "INSERT INTO cursor (source, seq, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
                (self.source, cursor, now))

    def _event(self, evt: Event, now: str, touched: set[str], desynced: set[str]) -> None:
        if not isinstance(evt, CommitEvent):
            self._facts = None  # the batch's read-ahead stream facts may no longer hold
        if isinstance(evt, CommitEvent):
            self._commit(evt, now, touched, desynced)
        elif isinstance(evt, AccountEvent):
            self._account(evt, desynced)
        elif isinstance(evt, IdentityEvent):
            self._identity(evt, touched)
        elif isinstance(evt, SyncEvent):
            self._sync(evt, desynced)
        elif isinstance(evt, InfoEvent) and evt.name == "OutdatedCursor":
            self._mark_all_desynchronized(desynced, "firehose cursor is outdated: events were missed")

    def _guarded(self, handle: Callable[..., None], evt: Event, now: str, touched: set[str],
                 desynced: set[str]) -> None:
        """``handle(evt, ...)`` in a SAVEPOINT. Record-level problems never get here (``apply_op``
        keeps them); if handling the event still raises anything but a database failure, the event's
        writes are rolled back, it is counted in ``event_errors`` and logged, and its repo (if we
        follow it or the event holds our records) is marked desynchronized so that a resync repairs
        what the event would have done."""
        if self._optimistic:
            try:
                handle(evt, now, touched, desynced)
            except Exception as exc:
                if database_failure(exc) and not _pipeline_aborted(exc):
                    raise
                raise _Careful("event error") from exc
            return
        self.conn.execute("SAVEPOINT evt")
        try:
            handle(evt, now, touched, desynced)
        except Exception as exc:
            if database_failure(exc):
                raise
            self.conn.execute("ROLLBACK TO evt")
            self.conn.execute("RELEASE evt")
            self.tracked = {r[0] for r in self.query("SELECT did FROM repo_state")}
            self.inactive = {r[0] for r in self.query("SELECT did FROM actor WHERE active = 0")}
            self.counters["event_errors"] += 1
            did = getattr(evt, "did", None)
            log.error("skipping firehose event seq %s of %s: %s", getattr(evt, "seq", None), did, describe(exc))
            if isinstance(did, str) and (did in self.tracked or (isinstance(evt, CommitEvent) and evt.ops)):
                self._mark_desynchronized(did, desynced)  # its records are ours: a resync brings them
            return
        self.conn.execute("RELEASE evt")

    async def transact(self, work: Callable[..., T], *args: Any) -> T:
        """``work(conn, *args)`` in one write transaction on the indexer's writer connection (its
        thread, under ``lock``), so other writers (the payment broker, webhooks) never interleave
        with a batch. Returns what ``work`` returns; raises what it raises, after rolling back."""
        async with self.lock:
            return await self.run(self._transaction, work, self.conn, *args)

    def _transaction(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in one transaction (in the writer thread). On failure everything is
        rolled back and the in-memory sets are reloaded from the database."""
        assert self.conn is not None
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(*args)
            if self.fence is not None:
                self.fence(self.conn)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.tracked = {r[0] for r in self.query("SELECT did FROM repo_state")}
            self.inactive = {r[0] for r in self.query("SELECT did FROM actor WHERE active = 0")}
            raise
        return result

    def _after(self, touched: set[str], desynced: set[str]) -> None:
        if self.on_new_did:
            for did in touched:
                self.on_new_did(did)
        if self.on_desync:
            for did in desynced:
                self.on_desync(did)

    def _state(self, did: str) -> tuple[str, str | None, str] | None:
        """(rev, data CID, status) of ``did``'s ``repo_state``, or None when we keep none."""
        if self._states is not None and did in self._states:
            return self._states[did]
        cur = self.conn.execute("SELECT rev, data_cid, status FROM repo_state WHERE did = ?", (did,))
        row = cur.fetchone()
        return (row[0], row[1], row[2]) if row else None


    def _commit(self, evt: CommitEvent, now: str, touched: set[str], desynced: set[str]) -> None:
        if not evt.ops and evt.did not in self.tracked:
            return  # most of the network: a repo we do not follow, nothing of ours (no database work)
        if evt.did in self.resyncing:
            self.resyncing[evt.did].append(evt)
            self.counters["buffered_commits"] += 1
            return
        state = self._state(evt.did)
        if state is None and not evt.ops:
            return  # a repo we do not follow, and nothing of ours in this commit
        if state and state[0] and evt.rev <= state[0]:
            self.counters["stale_commits"] += 1  # replayed or out of order: already applied
            return
        if evt.did in self.inactive:
            self.counters["inactive_commits"] += 1  # sync spec: ignore commits of accounts not active
            return
        if evt.rejected:
            self.counters["rejected_commits"] += 1
            for op in evt.ops:
                self._reject(evt.did, op, evt.rejected, evt.rejected_detail or evt.rejected, now)
            return
        if state:
            if state[2] == DESYNCHRONIZED:
                self.counters["skipped_desynchronized"] += 1  # the owed resync brings this commit
                return
            prev_data = cid_str(evt.prev_data) if evt.prev_data else None
            if (evt.since and state[0] and evt.since != state[0]) or (prev_data and state[1] and prev_data != state[1]):
                log.warning("repo %s desynchronized: since %s / prevData %s do not follow rev %s / data %s",
                            evt.did, evt.since, prev_data, state[0], state[1])
                self._mark_desynchronized(evt.did, desynced)
                return
        cur = self.conn.execute("INSERT OR IGNORE INTO actor (did) VALUES (?)", (evt.did,))
        if self._optimistic:
            self._new_actors.append((cur, evt.did))  # read at the end of the batch: no wait here
        elif cur.rowcount:
            touched.add(evt.did)
        for op in evt.ops:
            if evt.blocks_error:
                self._reject(evt.did, op, "bad_car", evt.blocks_error, now)
                continue
            self.apply_op(evt.did, op, evt.rev, now)
        self._set_state(evt.did, evt.rev, evt.commit, cid_str(evt.data) if evt.data else None, now)

    def _set_state(self, did: str, rev: str, commit: str | None, data: str | None, now: str) -> None:
        self.conn.execute(
            "INSERT INTO repo_state (did, rev, commit_cid, data_cid, status, updated_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, commit_cid = excluded.commit_cid, "
            "data_cid = excluded.data_cid, status = excluded.status, resync_attempts = 0, next_attempt = NULL, "
            "last_error = NULL, updated_at = excluded.updated_at", (did, rev, commit, data, SYNCHRONIZED, now))
        self.tracked.add(did)
        if self._states is not None:
            self._states[did] = (rev, data, SYNCHRONIZED)

    def _mark_desynchronized(self, did: str, desynced: set[str]) -> None:
        self.conn.execute(
            "INSERT INTO repo_state (did, rev, status, updated_at) VALUES (?, '', ?, ?) "
            "ON CONFLICT (did) DO UPDATE SET status = excluded.status, next_attempt = NULL",
            (did, DESYNCHRONIZED, now_iso()))
        self.tracked.add(did)
        if self._states is not None:
            self._states.pop(did, None)  # read again from the database if asked
        self.counters["desynchronized"] += 1
        desynced.add(did)

    def _mark_all_desynchronized(self, desynced: set[str], why: str) -> None:
        log.warning("%s: every followed repo (%d) will be resynced", why, len(self.tracked))
        self.conn.execute("UPDATE repo_state SET status = ?, next_attempt = NULL", (DESYNCHRONIZED,))
        if self._states is not None:
            self._states.clear()  # read again from the database if asked
        self.counters["desynchronized"] += len(self.tracked)
        desynced.update(self.tracked)

    async def host_reset(self) -> int:
        """The host's history was reset (``FutureCursor``: our cursor is ahead of everything it has).
        In one transaction: every followed repo is marked desynchronized (its resync brings what
        the new history holds) and this source's stored cursor is dropped (the consumer resumes
        from the host's current head). Returns how many repos were marked."""
        desynced: set[str] = set()

        def work() -> None:
            self._mark_all_desynchronized(desynced, "the firehose host's history was reset (FutureCursor)")
            self.conn.execute("DELETE FROM cursor WHERE source = ?", (self.source,))
        async with self.lock:
            await self.run(self._transaction, work)
        self.counters["host_resets"] += 1
        self._after(set(), desynced)
        return len(desynced)

    async def mark_desynchronized(self, dids: Iterable[str]) -> None:
        """Mark repos as owed a resync (e.g. discovered by backfill) in their own transaction."""
        desynced: set[str] = set()

        def work() -> None:
            for did in dids:
                self._mark_desynchronized(did, desynced)
        async with self.lock:
            await self.run(self._transaction, work)
        self._after(set(), desynced)

    def apply_op(self, did: str, op: RecordOp, rev: str | None, now: str) -> None:
        """Apply one record op (create / update / delete) inside the open transaction, in a
        SAVEPOINT: an invalid record is rejected and counted, never raised. So is a record that
        makes anything on its way raise (reason ``index_error``, or ``internal_error`` for what no
        check foresaw), after its writes are rolled back; only database failures propagate."""
        module = MODULES[op.collection]
        if self._facts is not None and not ((module is play and op.action == "create") or module in (like, follow)):
            self._facts = None  # this op may change what the batch's new plays were decided on
        ctx = WriteContext(self.conn, did, op.collection, op.rkey, op.cid, rev, now, self._facts)
        if self._optimistic:
            try:
                self._write_op(ctx, module, did, op, rev, now)
            except RecordInvalid as exc:
                self._reject(did, op, exc.reason, str(exc), now)  # what is written stays, as after RELEASE
            except Exception as exc:
                if database_failure(exc) and not _pipeline_aborted(exc):
                    raise
                raise _Careful("record error") from exc
            return
        self.conn.execute("SAVEPOINT op")
        try:
            self._write_op(ctx, module, did, op, rev, now)
            self.conn.execute("RELEASE op")
        except RecordInvalid as exc:
            self.conn.execute("RELEASE op")  # keep the removal of the old version: it is no longer valid
            self._reject(did, op, exc.reason, str(exc), now)
        except Exception as exc:
            if database_failure(exc):
                raise  # the database, not this record: the batch is retried
            self.conn.execute("ROLLBACK TO op")
            self.conn.execute("RELEASE op")
            known = isinstance(exc, KeyError | TypeError | ValueError | sqlite3.IntegrityError)
            self._reject(did, op, "index_error" if known else "internal_error", describe(exc), now)

    def _write_op(self, ctx: WriteContext, module: Any, did: str, op: RecordOp, rev: str | None, now: str) -> None:
        """The writes of one record op (``apply_op`` wraps them). Raises ``RecordInvalid``.

        In an optimistic batch a ``create`` skips the removal of an old version (one statement that
        waits for its answer, and the module's own): the ``record`` row's primary key makes a create
        of a record we hold fail, and the batch is then applied again the careful way. Its rejection
        removes the old version first, as the careful way does; a rejection from the module's
        ``insert``, which may have written, sends the batch the careful way too."""
        fast = self._optimistic and op.action == "create"
        existed = False if fast else self._remove(ctx, module)
        if op.action == "delete":
            if existed:
                self.counters["records_deleted"] += 1
            return
        try:
            if op.error:
                raise RecordInvalid(*op.error)
            if op.record is None:
                raise RecordInvalid("missing_block", f"record block {op.cid} is not in the commit")
            if getattr(module, "LEXICON", True):
                check_rkey(op.collection, op.rkey)
                validate_record(op.collection, op.record)
            else:
                check_foreign(op.collection, op.rkey, op.record)
            module.check(op.record)
        except RecordInvalid:
            if fast:
                self._remove(ctx, module)  # as the careful way: the old version is no longer valid
            raise
        try:
            module.insert(ctx, op.record)
        except RecordInvalid as exc:
            if fast:
                raise _Careful("rejected while inserting") from exc
            raise
        self.conn.execute(
            "INSERT INTO record (uri, did, collection, rkey, cid, rev, json, indexed_at) VALUES (?,?,?,?,?,?,?,?)",
            (ctx.uri, did, op.collection, op.rkey, op.cid, rev, json.dumps(to_json(op.record), separators=(",", ":")),
             now))
        self.counters["records_indexed"] += 1

    def _remove(self, ctx: WriteContext, module: Any) -> bool:
        """Delete the indexed version of ``ctx.uri`` (updates are delete-then-insert). True if one existed."""
        cur = self.conn.execute("DELETE FROM record WHERE uri = ?", (ctx.uri,))
        if cur.rowcount:
            module.delete(ctx)
            return True
        return False

    def _reject(self, did: str, op: RecordOp, reason: str, detail: str, now: str) -> None:
        uri = f"at://{did}/{op.collection}/{op.rkey}"
        detail = detail[:2000].encode("utf-8", "replace").decode("utf-8")
        cur = self.conn.execute(
            "INSERT INTO rejected_record (uri, cid, reason, detail, rejected_at) SELECT ?,?,?,?,? WHERE NOT EXISTS "
            "(SELECT 1 FROM rejected_record WHERE uri = ? AND cid IS NOT DISTINCT FROM ? AND reason = ?)",
            (uri, op.cid, reason, detail, now, uri, op.cid, reason))
        if cur.rowcount:
            self.rejections[reason] += 1
            log.warning("skipping invalid record %s (%s): %s", uri, reason, detail[:500])

    def _account(self, evt: AccountEvent, desynced: set[str]) -> None:
        # Only accounts we index: the network's other accounts are not our business.
        cur = self.conn.execute("SELECT active FROM actor WHERE did = ?", (evt.did,))
        row = cur.fetchone()
        if not row:
            return
        was_active = bool(row[0])
        self.conn.execute("UPDATE actor SET active = ?, status = ? WHERE did = ?",
                          (1 if evt.active else 0, evt.status, evt.did))
        if evt.active:
            self.inactive.discard(evt.did)
        else:
            self.inactive.add(evt.did)
        if was_active != evt.active:
            stats.count_account(self.conn, evt.did, 1 if evt.active else -1)
        if not evt.active and evt.status == "deleted":
            self.purge_account(evt.did)
        elif evt.active and not was_active and evt.did in self.tracked:
            self._mark_desynchronized(evt.did, desynced)  # reactivated: catch up on what changed

    def _identity(self, evt: IdentityEvent, touched: set[str]) -> None:
        cur = self.conn.execute("UPDATE actor SET resolved_at = NULL WHERE did = ?", (evt.did,))
        if cur.rowcount:
            touched.add(evt.did)

    def _sync(self, evt: SyncEvent, desynced: set[str]) -> None:
        if evt.did not in self.tracked or evt.did in self.resyncing or evt.did in self.inactive:
            return
        state = self._state(evt.did)
        if state and (not state[0] or evt.rev > state[0]) and state[2] != DESYNCHRONIZED:
            self._mark_desynchronized(evt.did, desynced)

    def purge_account(self, did: str) -> int:
        """Delete every indexed record of ``did`` (account deleted), keeping aggregates consistent.
        Runs inside the caller's transaction. Returns the number of records removed."""
        cur = self.conn.execute("SELECT active FROM actor WHERE did = ?", (did,))
        row = cur.fetchone()
        if row and not row[0]:
            stats.count_account(self.conn, did, 1)  # its removal below uncounts it once more
        cur = self.conn.execute("SELECT collection, rkey FROM record WHERE did = ?", (did,))
        rows = cur.fetchall()
        now = now_iso()
        for collection, rkey in rows:
            module = MODULES.get(collection)
            if module:
                self._remove(WriteContext(self.conn, did, collection, rkey, None, None, now), module)
        self.conn.execute("DELETE FROM repo_state WHERE did = ?", (did,))
        self.tracked.discard(did)
        if self._states is not None:
            self._states.pop(did, None)
        self.counters["records_purged"] += len(rows)
        return len(rows)

    async def reindex_artist(self, did: str) -> None:
        """Rewrite the search text of ``did``'s tracks (after its handle changed)."""
        await self.transact(search.reindex_artist, did)

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

        def work() -> None:
            now = now_iso()
            rows = self.query("SELECT collection, rkey, cid FROM record WHERE did = ?", (snap.did,))
            current = {f"{c}/{r}": cid for c, r, cid in rows}
            self.conn.execute("INSERT OR IGNORE INTO actor (did) VALUES (?)", (snap.did,))
            for path, (cid, record) in snap.records.items():
                collection, _, rkey = path.partition("/")
                if collection not in MODULES or current.get(path) == cid:
                    continue
                if collection == share.COLLECTION and path not in current and not (
                        isinstance(record, dict) and share.find_subject(record)):
                    continue  # an ordinary post: not ours to keep (as the decoder drops it live)
                action = "update" if path in current else "create"
                op = RecordOp(action, collection, rkey, cid, record, error=snap.errors.get(path))
                self.apply_op(snap.did, op, snap.rev, now)
                changes[action] += 1
            for path in current.keys() - snap.records.keys():
                collection, _, rkey = path.partition("/")
                # Only the collections the snapshot holds in full (``Snapshot.covers``): of the others
                # it says nothing, and their records stay as the firehose left them.
                if collection in MODULES and snap.covers(collection):
                    self.apply_op(snap.did, RecordOp("delete", collection, rkey, None), snap.rev, now)
                    changes["delete"] += 1
            self._set_state(snap.did, snap.rev, None, cid_str(snap.data), now)
            for evt in buffered:
                self._commit(evt, now, touched, desynced)
                changes["replayed"] += 1

        async with self.lock:
            buffered = self.resyncing.pop(snap.did, [])
            try:
                await self.run(self._transaction, work)
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
            await self.sql("UPDATE repo_state SET resync_attempts = resync_attempts + 1, next_attempt = ?, "
                           "last_error = ? WHERE did = ?", (time.time() + retry_in_s, error[:500], did))
        self.counters["resync_failures"] += 1
