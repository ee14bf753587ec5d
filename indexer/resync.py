"""Resync worker (sync spec, "Record-Level Synchronization"): repos marked desynchronized are
fetched whole with ``com.atproto.sync.getRepo`` from their PDS, verified (``firehose.repo``),
diffed against the index and replaced, while their live commits are buffered by the indexer.

Failures back off per repo (1 minute doubling to 1 hour, as Tap does); requests are spaced per
host (``per_host_interval_s``) so a burst of resyncs cannot hammer one PDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import httpx

from firehose.repo import FetchError, fetch_repo, load_snapshot
from firehose.verify import TransientIdentityError, VerifyError
from indexer.core import DESYNCHRONIZED, Indexer
from openmusic.identity import IdentityService

log = logging.getLogger("openmusic.resync")


class Resyncer:
    """Works the queue of repos to resync. ``schedule(did)`` queues one; ``run()`` works until cancelled.

    ``progress`` counts done / failed / queued for ``/health`` and the backfill command.
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

    @property
    def pending(self) -> int:
        """Repos queued or in progress."""
        return len(self._queued)

    def schedule(self, did: str) -> None:
        """Queue ``did`` (deduplicated) and start buffering its live commits."""
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
                except Exception:
                    log.exception("resync of %s crashed", did)
                finally:
                    self._queued.discard(did)

        async def sweeper() -> None:
            while True:
                await self.sweep()
                await asyncio.sleep(5)
        await asyncio.gather(sweeper(), *(worker() for _ in range(self.concurrency)))

    async def sweep(self) -> int:
        """Queue desynchronized repos whose retry time has come. Returns how many were queued."""
        rows = await self.indexer.sql(
            "SELECT did FROM repo_state WHERE status = ? AND (next_attempt IS NULL OR next_attempt <= ?)",
            (DESYNCHRONIZED, time.time()))
        dids = [r[0] for r in rows if r[0] not in self._queued]
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
        """Resync one repo now. Returns True when the index matches its verified snapshot."""
        self.indexer.begin_resync(did)
        rows = await self.indexer.sql("SELECT resync_attempts FROM repo_state WHERE did = ?", (did,))
        attempts = rows[0][0] if rows else 0
        try:
            pds = await self.identity.pds(did)
            if not pds:
                raise FetchError(f"{did} names no PDS", transient=False)
            await self._space(pds)
            car = await fetch_repo(self.http, pds, did, self.allow_private_hosts)
            key = await self.identity.signing_key(did)
            if not key:
                raise VerifyError("no_signing_key", f"{did} has no #atproto key")
            try:
                snap = await asyncio.to_thread(load_snapshot, car, did, key)
            except VerifyError as exc:
                if exc.reason != "bad_signature":
                    raise
                key = await self.identity.signing_key(did, refresh=True)  # the key may have rotated
                snap = await asyncio.to_thread(load_snapshot, car, did, key or "")
        except (FetchError, VerifyError, TransientIdentityError) as exc:
            self.failed += 1
            retry = min(60 * 2 ** attempts, 3600)
            log.warning("resync of %s failed (retry in %ds): %s", did, retry, exc)
            await self.indexer.resync_failed(did, str(exc), retry)
            return False
        changes = await self.indexer.apply_snapshot(snap)
        self.done += 1
        log.info("resynced %s at rev %s: %s", did, snap.rev, dict(changes))
        return True
