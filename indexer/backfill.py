"""Backfill: find the repos that hold our collections and import each one (sync spec and the
"Backfilling" guide).

Discovery uses ``com.atproto.sync.listReposByCollection`` (relays run it) and falls back to
``com.atproto.sync.listRepos`` (every PDS) filtered by ``com.atproto.repo.describeRepo``, both by
``BACKFILL_COLLECTIONS``. Each repo found is marked desynchronized in the database, so the resync
worker imports its verified CAR while the live firehose is buffered for it: that is the hand-over
to the live stream. The resync loads every collection we index from it (``indexer.resync``), teal.fm
plays and shares included. Listing progress (the page cursor) is stored after every page, and
desynchronized repos stay marked until imported, so an interrupted backfill resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx

from core.db import now_iso
from core.netguard import BlockedURL, check_url
from indexer import plyr_track
from indexer.core import OWN_COLLECTIONS, Indexer

log = logging.getLogger("openmusic.backfill")

#: The collections backfill lists repos by: those of our own namespace (``fm.openmusic.*``) and
#: ``fm.plyr.track``, i.e. the creators whose tracks we carry and the listeners of our app. Not
#: teal.fm plays (``fm.teal.feed.play``, ``fm.teal.alpha.feed.play``: every scrobbler on the
#: network, whatever they listen to, nearly all of it not in our catalog) nor ``app.bsky.feed.post``
#: (every Bluesky account): too broad to import network-wide. Those are loaded for the repos we do
#: resync (found here, or followed live), and indexed from the firehose as they are written.
#: Sorted, so a stored "<collection> <cursor>" resumes in the same order.
BACKFILL_COLLECTIONS: tuple[str, ...] = tuple(sorted({*OWN_COLLECTIONS, plyr_track.COLLECTION}))


class BackfillError(Exception):
    """The source cannot be listed."""


class Backfill:
    """Lists ``source`` (a relay or PDS base URL) and marks its music repos for import.

    ``listed`` counts repos seen, ``found`` those with our collections.
    """

    def __init__(self, indexer: Indexer, http: httpx.AsyncClient, source: str, allow_private: bool,
                 request_interval_s: float = 0.05) -> None:
        self.indexer = indexer
        self.http = http
        self.source = source.rstrip("/").replace("wss://", "https://").replace("ws://", "http://")
        self.allow_private = allow_private
        self.interval = request_interval_s
        self.listed = 0
        self.found = 0

    async def _get(self, nsid: str, params: dict[str, str | int]) -> httpx.Response:
        url = f"{self.source}/xrpc/{nsid}"
        try:
            await check_url(url, self.allow_private)
        except BlockedURL as exc:
            raise BackfillError(str(exc)) from exc
        for attempt in range(5):
            await asyncio.sleep(self.interval)
            try:
                resp = await self.http.get(url, params=params, timeout=60)
            except httpx.HTTPError as exc:
                if attempt == 4:
                    raise BackfillError(f"{nsid}: {exc}") from exc
                await asyncio.sleep(2 ** attempt)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                await asyncio.sleep(float(resp.headers.get("retry-after", 2 ** attempt)))
                continue
            return resp
        raise BackfillError(f"{nsid}: {self.source} keeps failing")

    async def _progress(self) -> tuple[str | None, bool]:
        rows = await self.indexer.sql("SELECT cursor, complete FROM backfill WHERE source = ?",
                                      (self.source,))
        return (rows[0][0], bool(rows[0][1])) if rows else (None, False)

    async def _save(self, cursor: str | None, complete: bool) -> None:
        async with self.indexer.lock:
            await self.indexer.sql(
                "INSERT INTO backfill (source, cursor, listed, complete, updated_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, listed = backfill.listed + excluded.listed, "
                "complete = excluded.complete, updated_at = excluded.updated_at",
                (self.source, cursor, self.listed, 1 if complete else 0, now_iso()))

    async def run(self) -> int:
        """List the source to the end (resuming a stored cursor) and mark every music repo found.
        Returns how many were found in this run. Raises ``BackfillError``."""
        cursor, complete = await self._progress()
        if complete:
            log.info("backfill of %s already listed; resyncs finish what is left", self.source)
            return 0
        async for dids, next_cursor in self._pages(cursor):
            fresh = [d for d in dids if d not in self.indexer.tracked]
            if fresh:
                await self.indexer.mark_desynchronized(fresh)
            self.found += len(fresh)
            await self._save(next_cursor, complete=next_cursor is None)
        return self.found

    async def _pages(self, cursor: str | None) -> AsyncIterator[tuple[list[str], str | None]]:
        probe = await self._get("com.atproto.sync.listReposByCollection",
                                {"collection": BACKFILL_COLLECTIONS[0], "limit": 1})
        if probe.status_code == 200:
            # one pass per collection; the stored cursor is "<collection> <cursor>"
            collections = list(BACKFILL_COLLECTIONS)
            start_coll, _, start_cursor = (cursor or "").partition(" ")
            for coll in collections[collections.index(start_coll) if start_coll in collections else 0:]:
                page_cursor = start_cursor if coll == start_coll else ""
                while True:
                    params: dict[str, str | int] = {"collection": coll, "limit": 2000}
                    if page_cursor:
                        params["cursor"] = page_cursor
                    resp = await self._get("com.atproto.sync.listReposByCollection", params)
                    if resp.status_code != 200:
                        raise BackfillError(f"listReposByCollection answered {resp.status_code}: {resp.text[:200]}")
                    body = resp.json()
                    dids = [r["did"] for r in body.get("repos", [])]
                    self.listed += len(dids)
                    page_cursor = body.get("cursor") or ""
                    if page_cursor:
                        resume: str | None = f"{coll} {page_cursor}"
                    elif coll != collections[-1]:
                        resume = f"{collections[collections.index(coll) + 1]} "
                    else:
                        resume = None  # listed everything
                    yield dids, resume
                    if not page_cursor:
                        break
            return
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            resp = await self._get("com.atproto.sync.listRepos", params)
            if resp.status_code != 200:
                raise BackfillError(f"listRepos answered {resp.status_code}: {resp.text[:200]}")
            body = resp.json()
            repos = [r for r in body.get("repos", []) if r.get("active", True)]
            self.listed += len(body.get("repos", []))
            dids = [r["did"] for r in repos if await self._has_music(r["did"])]
            cursor = body.get("cursor")
            yield dids, cursor
            if not cursor or not body.get("repos"):
                return

    async def _has_music(self, did: str) -> bool:
        resp = await self._get("com.atproto.repo.describeRepo", {"repo": did})
        if resp.status_code != 200:
            return False
        return any(c in BACKFILL_COLLECTIONS for c in resp.json().get("collections", []))
