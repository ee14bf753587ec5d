"""Resync worker (sync spec, "Record-Level Synchronization"): repos marked desynchronized are
fetched whole with ``com.atproto.sync.getRepo`` from their PDS, verified (``firehose.repo``),
diffed against the index and replaced, while their live commits are buffered by the indexer.

A snapshot holds every collection the indexer indexes live (``snapshot_collections``: our
``fm.openmusic.*`` records, teal.fm plays of both namespaces, ``fm.plyr.track``, and the
``app.bsky.feed.post`` records that share our pages, kept by the decoder's own filter,
``Indexer.selection.keep``), so a resynced repo ends with the index rows a live stream of the same
records would have left, deletions included. The posts cost a walk of their MST range and a bytes
search per post; only the few that hold one of our hosts are decoded. ``python -m bench.resync``
(a repo of 5,000 posts, 1.25 MB CAR, on the reference PDS): the snapshot of every collection loads
in about 80 ms against 33 ms for ``fm.openmusic.*`` alone (of which ~40 ms is reading and
verifying the CAR, paid either way), and 130 ms were every post decoded.

Every failure, whatever raised it (a fetch, a verification, a record, a bug), is counted, logged
in one line (its traceback only on a repo's first failure), kept in ``repo_state`` (attempts, last
error, next attempt) and backs off per repo: 1 minute doubling to 1 hour, as Tap does. The backoff
is also held in memory, so it holds even when the database cannot record it. Requests are spaced
per host (``per_host_interval_s``) so a burst of resyncs cannot hammer one PDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import httpx

from core.identity import IdentityService
from firehose.repo import FetchError, fetch_repo, load_snapshot
from firehose.verify import TransientIdentityError, VerifyError
from indexer.core import DESYNCHRONIZED, MODULES, Indexer, describe

log = logging.getLogger("openmusic.resync")


#: Backoff after a repo's first failed resync, doubled at each further failure up to ``MAX_RETRY_S``.
FIRST_RETRY_S = 60.0
MAX_RETRY_S = 3600.0


def retry_delay(attempts: int, first: float = FIRST_RETRY_S, cap: float = MAX_RETRY_S) -> float:
    """Seconds to wait after a repo's resync failed with ``attempts`` earlier failures."""
    return min(first * 2 ** min(attempts, 32), cap)


def snapshot_collections(indexer: Indexer) -> tuple[str, ...]:
    """The collections a resync loads: every one the indexer indexes (``MODULES``) that its
    decoder selection keeps live (``Indexer.selection``), sorted."""
    return tuple(sorted(c for c in MODULES if indexer.selection(c)))


class Resyncer:
    """Works the queue of repos to resync. ``schedule(did)`` queues one; ``run()`` works until cancelled.

    ``done``, ``failed`` (failed attempts), ``pending`` and ``failing`` (repos whose last attempt
    failed: ``did -> (attempts, retry at (epoch s), error)``) are for ``/health`` and the backfill
    command; ``last_error`` is the latest failure's one-line description.
    """

    def __init__(self, indexer: Indexer, identity: IdentityService, http: httpx.AsyncClient,
                 allow_private_hosts: bool, concurrency: int = 4, per_host_interval_s: float = 0.05) -> None:
        self.indexer = indexer
        self.identity = identity
        self.http = http
        self.allow_private_hosts = allow_private_hosts
        self.concurrency = concurrency
        self.per_host_interval_s = per_host_interval_s
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._host_next: dict[str, float] = {}
        self._host_lock = asyncio.Lock()
        self.done = 0
        self.failed = 0
        self.failing: dict[str, tuple[int, float, str]] = {}
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        """Repos queued or in progress."""
        return len(self._queued)

    def schedule(self, did: str) -> None:
        """Queue ``did`` (deduplicated) and start buffering its live commits. A repo whose resync
        failed waits for its backoff (``sweep`` queues it then)."""
        if did in self.failing and self.failing[did][1] > time.time():
            return
        if did not in self._queued:
            self._queued.add(did)
            self.indexer.begin_resync(did)
            self.queue.put_nowait(did)

    async def run(self) -> None:
        """Resync queued repos, and every ``sweep_s`` re-queue those whose backoff has passed."""
        async def worker() -> None:
            while True:
                did = await self.queue.get()
                try:
                    await self.resync(did)
                except Exception:  # resync() keeps its failures; this is a last resort
                    log.exception("resync of %s crashed", did)
                finally:
                    self._queued.discard(did)

        async def sweeper() -> None:
            while True:
                try:
                    await self.sweep()
                except Exception as exc:  # e.g. the database is locked: try again at the next sweep
                    log.warning("resync sweep failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(5)
        await asyncio.gather(sweeper(), *(worker() for _ in range(self.concurrency)))

    async def sweep(self) -> int:
        """Queue desynchronized repos whose retry time has come. Returns how many were queued."""
        now = time.time()
        rows = await self.indexer.sql("SELECT did, next_attempt FROM repo_state WHERE status = ?", (DESYNCHRONIZED,))
        owed = {did: next_attempt for did, next_attempt in rows}
        for did in self.failing.keys() - owed.keys():
            del self.failing[did]  # synchronized since, or its account was deleted
        dids = [did for did, next_attempt in owed.items()
                if (next_attempt is None or next_attempt <= now) and did not in self._queued
                and not (did in self.failing and self.failing[did][1] > now)]
        for did in dids:
            self.schedule(did)
        return len(dids)

    async def _space(self, url: str) -> None:
        host = urlsplit(url).netloc
        async with self._host_lock:
            now = time.monotonic()
            start = max(now, self._host_next.get(host, now))
            self._host_next[host] = start + self.per_host_interval_s
        if start > now:
            await asyncio.sleep(start - now)

    async def resync(self, did: str) -> bool:
        """Resync one repo now. Returns True when the index matches its verified snapshot, False
        when it failed (counted, logged, backed off; never raised)."""
        self.indexer.begin_resync(did)
        attempts = self.failing[did][0] if did in self.failing else 0
        try:
            rows = await self.indexer.sql("SELECT resync_attempts FROM repo_state WHERE did = ?", (did,))
            attempts = max(attempts, rows[0][0] if rows else 0)
            pds = await self.identity.pds(did)
            if not pds:
                raise FetchError(f"{did} names no PDS", transient=False)
            await self._space(pds)
            car = await fetch_repo(self.http, pds, did, self.allow_private_hosts)
            key = await self.identity.signing_key(did)
            if not key:
                raise VerifyError("no_signing_key", f"{did} has no #atproto key")
            collections, keep = snapshot_collections(self.indexer), self.indexer.selection.keep
            try:
                snap = await asyncio.to_thread(load_snapshot, car, did, key, collections, keep)
            except VerifyError as exc:
                if exc.reason != "bad_signature":
                    raise
                key = await self.identity.signing_key(did, refresh=True)  # the key may have rotated
                snap = await asyncio.to_thread(load_snapshot, car, did, key or "", collections, keep)
            changes = await self.indexer.apply_snapshot(snap)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(did, attempts, exc)
            return False
        self.done += 1
        self.failing.pop(did, None)
        log.info("resynced %s at rev %s: %s (walked %d records, %d left out by filters)", did, snap.rev,
                 dict(changes), sum(snap.walked.values()), sum(snap.dropped.values()))
        return True

    async def _failed(self, did: str, attempts: int, exc: Exception) -> None:
        """Count, log (one line; the traceback once, for an unexpected error on a repo's first
        failure), and back off ``did``'s next attempt, in memory and in ``repo_state``."""
        self.failed += 1
        retry = retry_delay(attempts)
        expected = isinstance(exc, FetchError | VerifyError | TransientIdentityError)
        error = str(exc)[:500] if expected else describe(exc)
        self.last_error = f"{did}: {error}"
        self.failing[did] = (attempts + 1, time.time() + retry, error)
        log.warning("resync of %s failed (attempt %d, retry in %ds): %s", did, attempts + 1, retry, error,
                    exc_info=exc if not expected and attempts == 0 else None)
        try:
            await self.indexer.resync_failed(did, error, retry)
        except Exception as db_exc:  # the in-memory backoff still holds
            self.indexer.resyncing.pop(did, None)
            log.warning("could not record the failed resync of %s: %s", did, describe(db_exc))
