"""Identity: DIDs (did:plc through the configured PLC directory, did:web) and handles, cached in
the ``actor`` table and refreshed in the background (on ``#identity`` events, for new DIDs, and
when older than ``Settings.identity_ttl_s``).

A handle is shown only when it resolves back to the same DID (atproto handle spec, bidirectional
verification); otherwise views show ``handle.invalid``.

Only DIDs the indexer put in the ``actor`` table (they appeared in the firehose or a repo we
index) are stored. DIDs learned from unauthenticated input (a service-auth JWT's ``iss``, a
handle in a query) are resolved into memory only, and failed resolutions are remembered for a
while (``FAILED_TTL_S`` / ``TRANSIENT_TTL_S``) rather than tried again on every request. A DID is
resolved only when its syntax is valid (``valid_did``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import aiosqlite
import httpx
from atproto_core.did_doc import DidDocument
from atproto_identity.handle.resolver import AsyncHandleResolver

from core.config import Settings
from core.db import TRANSIENT_ERRORS, normalize_datetime, write_transaction
from core.errors import TransientIdentityError
from core.netguard import BlockedURL, check_url

log = logging.getLogger("core.identity")
INVALID_HANDLE = "handle.invalid"
#: Seconds before a stored DID whose resolution failed for now (network, 5xx) is tried again.
RETRY_FAILED_S = 300
#: Seconds a failed resolution is remembered in memory: permanent failures (unknown DID, bad
#: document, bad syntax) and transient ones. Within them the DID is not fetched again.
FAILED_TTL_S = 3600
TRANSIENT_TTL_S = 30
#: Entries kept in each in-memory cache (DIDs, handles, failures); the oldest go first.
CACHE_SIZE = 50_000
#: Seconds between sweeps for identities older than the TTL.
SWEEP_S = 600
#: seconds before a queued refresh that failed on the database (SQLite busy past its timeout, a
#: lost PostgreSQL connection) is queued again, later at each try; after the last, the sweep has it
BUSY_RETRY_S = (1.0, 4.0, 16.0)

#: atproto DID syntax for the methods we resolve: did:plc is 24 base32 characters; did:web is a
#: hostname (no path), with a port (``%3A``) only on localhost / 127.0.0.1 (atproto DID spec).
_PLC = re.compile(r"did:plc:[a-z2-7]{24}")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_WEB = re.compile(rf"did:web:(?P<host>(?:{_LABEL}\.)*{_LABEL})(?:%3[aA](?P<port>[0-9]{{1,5}}))?")
_LOCAL = {"localhost", "127.0.0.1"}


def valid_did(did: object) -> bool:
    """True when ``did`` is a did:plc or did:web in its strict atproto syntax (nothing else is
    resolved: a ``did:plc:../../admin`` never becomes a request)."""
    if not isinstance(did, str):
        return False
    if _PLC.fullmatch(did):
        return True
    web = _WEB.fullmatch(did)
    if not web or len(web["host"]) > 253:
        return False
    return web["port"] is None or (web["host"].lower() in _LOCAL and 0 < int(web["port"]) < 65536)


class _Expiring:
    """A bounded in-memory map whose entries expire (per entry TTL); the oldest go first when full."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._data: dict[str, tuple[float, object]] = {}

    def get(self, key: str, now: float | None = None) -> object | None:
        """The live value of ``key``, or None."""
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] <= (time.monotonic() if now is None else now):
            del self._data[key]
            return None
        return hit[1]

    def put(self, key: str, value: object, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        self._data.pop(key, None)
        while len(self._data) >= self.size:
            del self._data[next(iter(self._data))]
        self._data[key] = (time.monotonic() + ttl, value)

    def pop(self, key: str) -> None:
        """Forget ``key``."""
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class IdentityError(Exception):
    """A DID document or handle could not be resolved. ``transient`` is True when trying again
    later may succeed (network error, 5xx, 429), False when the DID is unknown or its document bad."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class DidInfo:
    """What we use from a DID document: claimed handle, PDS endpoint, ``#atproto`` signing key (did:key)."""

    did: str
    handle: str | None
    pds: str | None
    signing_key: str | None


class IdentityResolver:
    """Resolves DIDs and handles over HTTP(S)/DNS. ``http`` is shared; SSRF-guarded per ``settings``."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self._dns = AsyncHandleResolver(timeout=5)

    async def resolve_did(self, did: str) -> DidInfo:
        """Fetch and parse ``did``'s document. Raises ``IdentityError``."""
        raw = await self.document(did)
        try:
            doc = DidDocument.from_dict(raw)
        except Exception as exc:  # pydantic validation
            raise IdentityError(f"{did}: not a DID document ({exc})") from exc
        return DidInfo(did=did, handle=doc.get_handle(), pds=doc.get_pds_endpoint(), signing_key=doc.get_did_key())

    async def document(self, did: str) -> dict:
        """``did``'s DID document as JSON (did:plc from the PLC directory, did:web from
        ``/.well-known/did.json``), checked to describe ``did``. Raises ``IdentityError``, without
        any request when ``did`` is not a valid did:plc or did:web (``valid_did``)."""
        if not valid_did(did):
            raise IdentityError(f"not a valid did:plc or did:web: {did[:300]!r}")
        if did.startswith("did:plc:"):
            url = f"{self.settings.plc_url.rstrip('/')}/{quote(did)}"
        elif did.startswith("did:web:"):
            host = did[len("did:web:"):].replace("%3a", ":").replace("%3A", ":")
            scheme = "http" if host.split(":")[0] in ("localhost", "127.0.0.1") else "https"
            url = f"{scheme}://{host}/.well-known/did.json"
            try:
                await check_url(url, self.settings.allow_private_hosts)
            except BlockedURL as exc:
                raise IdentityError(str(exc)) from exc
        else:
            raise IdentityError(f"unsupported DID method: {did}")
        try:
            resp = await self.http.get(url, timeout=10)
        except httpx.HTTPError as exc:
            raise IdentityError(f"fetching {url}: {exc}", transient=True) from exc
        if resp.status_code != 200:
            raise IdentityError(f"{url} answered {resp.status_code}",
                                transient=resp.status_code >= 500 or resp.status_code == 429)
        try:
            raw = resp.json()
        except ValueError as exc:
            raise IdentityError(f"{url}: not JSON ({exc})") from exc
        if not isinstance(raw, dict) or raw.get("id") != did:
            raise IdentityError(f"{url} does not describe {did}")
        return raw

    async def plc_created_at(self, did: str) -> str | None:
        """When the PLC directory accepted ``did``'s first operation (``createdAt`` of the first
        entry of ``GET {plc}/{did}/log/audit``, normalized to ``YYYY-MM-DDTHH:MM:SS.mmmZ``), or None
        for a did:web, on any failure, or an answer that is not an audit log of ``did``. The PLC
        directory stamps that time itself, so an account cannot backdate it (``appview.reputation``)."""
        if not (valid_did(did) and did.startswith("did:plc:")):
            return None
        url = f"{self.settings.plc_url.rstrip('/')}/{quote(did)}/log/audit"
        try:
            resp = await self.http.get(url, timeout=10)
            log_ = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if not (isinstance(log_, list) and log_ and isinstance(log_[0], dict) and log_[0].get("did") == did):
            return None
        return normalize_datetime(log_[0].get("createdAt")) if isinstance(log_[0].get("createdAt"), str) else None

    async def resolve_handle(self, handle: str) -> str | None:
        """Handle -> DID, or None. Uses ``Settings.handle_resolver_url`` (XRPC
        ``com.atproto.identity.resolveHandle``) when set, else DNS TXT then HTTPS well-known."""
        handle = handle.lower().lstrip("@")
        if self.settings.handle_resolver_url:
            try:
                resp = await self.http.get(
                    f"{self.settings.handle_resolver_url.rstrip('/')}/xrpc/com.atproto.identity.resolveHandle",
                    params={"handle": handle}, timeout=10)
            except httpx.HTTPError:
                return None
            try:
                did = resp.json().get("did") if resp.status_code == 200 else None
            except (ValueError, AttributeError):
                return None
            return did if valid_did(did) else None
        try:
            await check_url(f"https://{handle}/", self.settings.allow_private_hosts)
        except BlockedURL:
            return None
        try:
            did = await self._dns.resolve(handle)
        except Exception:  # dns / http failures: unresolvable
            return None
        return did if valid_did(did) else None


class IdentityService:
    """Keeps the ``actor`` table's handles, PDS endpoints and signing keys current.

    ``conn`` is a writer connection of its own (not the indexer's). ``schedule(did)`` queues a
    refresh; ``run()`` works the queue (up to 4 at once). ``did_for_handle`` serves queries and
    ``signing_key`` service auth and commit verification.

    Only rows the indexer created are written: a DID without an ``actor`` row (a JWT issuer, the
    owner of a handle looked up in a query) is resolved into memory (``_docs``, ``_keys``) and never
    stored. Failed resolutions are remembered (``_failed``) for ``FAILED_TTL_S`` (permanent) or
    ``TRANSIENT_TTL_S`` (transient); requests do not fetch such a DID again before then.
    """

    def __init__(self, settings: Settings, conn: aiosqlite.Connection, resolver: IdentityResolver) -> None:
        self.settings = settings
        self.conn = conn
        self.resolver = resolver
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._write_lock = asyncio.Lock()
        #: DID -> its #atproto key ("" when its document has none)
        self._keys = _Expiring()
        #: DID -> DidInfo, for DIDs resolved but not stored
        self._docs = _Expiring()
        #: DID -> the IdentityError of its last resolution, while it is not to be tried again
        self._failed = _Expiring()
        #: handle -> its verified DID ("" when it has none)
        self._handles = _Expiring()
        self.failures = 0
        #: DID -> refreshes in a row that failed on the database (``BUSY_RETRY_S``)
        self._busy_tries: dict[str, int] = {}
        #: awaited with the DID after its verified handle changed (the indexer refreshes search text)
        self.on_handle_change: Callable[[str], Awaitable[None]] | None = None

    def schedule(self, did: str) -> None:
        """Queue ``did`` for a refresh (deduplicated)."""
        if did not in self._pending:
            self._pending.add(did)
            self.queue.put_nowait(did)

    async def run(self, concurrency: int = 4) -> None:
        """Refresh queued DIDs until cancelled. Queued DIDs are the indexer's (new in the firehose,
        ``#identity`` events) and the sweep's: they are fetched even after a recent failure. A refresh
        that fails on the database (``core.db.TRANSIENT_ERRORS``) is queued again after each of
        ``BUSY_RETRY_S`` seconds, so a busy moment does not leave a new account without its handle
        until the next sweep (``SWEEP_S``)."""
        loop = asyncio.get_running_loop()
        retries: set[asyncio.TimerHandle] = set()

        def again(did: str) -> None:
            retries.difference_update([h for h in retries if h.cancelled() or h.when() <= loop.time()])
            self.schedule(did)

        async def worker() -> None:
            while True:
                did = await self.queue.get()
                tries = self._busy_tries.pop(did, 0)
                try:
                    await self.refresh(did, force=True)
                except TRANSIENT_ERRORS as exc:  # the database, not the identity: soon again
                    if tries < len(BUSY_RETRY_S):
                        self._busy_tries[did] = tries + 1
                        log.warning("identity refresh of %s failed on the database (%s); again in %.0f s",
                                    did, exc, BUSY_RETRY_S[tries])
                        retries.add(loop.call_later(BUSY_RETRY_S[tries], again, did))
                    else:
                        log.exception("identity refresh of %s failed", did)
                except Exception:  # never let one identity stop the worker
                    log.exception("identity refresh of %s failed", did)
                finally:
                    self._pending.discard(did)
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(SWEEP_S)
                await self.refresh_stale()
        try:
            await asyncio.gather(sweeper(), *(worker() for _ in range(concurrency)))
        finally:  # stopped: no retry fires into a queue nobody reads
            for handle in retries:
                handle.cancel()

    def _recent_failure(self, did: str, strict: bool) -> bool:
        """True when ``did`` failed to resolve a moment ago (so it is not fetched again now). With
        ``strict``, a transient failure raises ``TransientIdentityError`` instead."""
        failed = self._failed.get(did)
        if not isinstance(failed, IdentityError):
            return False
        if strict and failed.transient:
            raise TransientIdentityError(str(failed))
        return True

    async def signing_key(self, did: str, refresh: bool = False) -> str | None:
        """``did``'s ``#atproto`` signing key (``did:key``), from memory, the ``actor`` table, or a
        fresh resolution (always with ``refresh``, unless it failed a moment ago). None when the DID
        has no document or key. Raises ``TransientIdentityError`` when the document cannot be
        fetched right now."""
        if not refresh:
            key = self._keys.get(did)
            if isinstance(key, str):
                return key or None
            if self._recent_failure(did, strict=True):
                return None
            cur = await self.conn.execute("SELECT signing_key FROM actor WHERE did = ? AND resolved_at IS NOT NULL "
                                          "AND signing_key IS NOT NULL", (did,))
            row = await cur.fetchone()
            if row:
                self._keys.put(did, row[0], self.settings.identity_ttl_s)
                return row[0]
        await self.refresh(did, strict=True)
        key = self._keys.get(did)
        return key if isinstance(key, str) and key else None

    async def pds(self, did: str) -> str | None:
        """The PDS endpoint in ``did``'s document (resolving it when unknown). Raises
        ``TransientIdentityError`` when the document cannot be fetched right now."""
        cur = await self.conn.execute("SELECT pds FROM actor WHERE did = ? AND resolved_at IS NOT NULL", (did,))
        row = await cur.fetchone()
        if row and row[0]:
            return row[0]
        if not row and isinstance(info := self._docs.get(did), DidInfo):
            return info.pds
        await self.refresh(did, strict=True)
        cur = await self.conn.execute("SELECT pds FROM actor WHERE did = ?", (did,))
        row = await cur.fetchone()
        if row:
            return row[0]
        info = self._docs.get(did)
        return info.pds if isinstance(info, DidInfo) else None

    async def refresh(self, did: str, strict: bool = False, force: bool = False) -> str | None:
        """Resolve ``did`` now, verify its handle both ways, and store it when it has an ``actor``
        row (otherwise keep it in memory). Returns the verified handle or None.

        A DID that failed a moment ago is not fetched again (None) unless ``force``. With
        ``strict``, a transient failure raises ``TransientIdentityError``; a permanent one
        (unknown DID, bad document, bad syntax) forgets the DID's key."""
        if not force and self._recent_failure(did, strict):
            return None
        ttl = self.settings.identity_ttl_s
        try:
            info = await self.resolver.resolve_did(did)
        except IdentityError as exc:
            self.failures += 1
            log.info("cannot resolve %s: %s", did[:300], exc)
            self._failed.put(did, exc, TRANSIENT_TTL_S if exc.transient else FAILED_TTL_S)
            if not exc.transient:
                self._keys.pop(did)
                self._docs.pop(did)
            # a stored DID keeps what we knew; it is tried again in RETRY_FAILED_S after a transient
            # failure and after the TTL after a permanent one (not on every sweep, not on every request)
            retry_in = RETRY_FAILED_S if exc.transient else ttl
            if await self._stored(did):
                async with self._write_lock:
                    await self.conn.execute("UPDATE actor SET resolved_at = ? WHERE did = ?",
                                            (time.time() - ttl + retry_in, did))
            if strict and exc.transient:
                raise TransientIdentityError(str(exc)) from exc
            return None
        self._failed.pop(did)
        verified = False
        if info.handle:
            verified = (await self.resolver.resolve_handle(info.handle)) == did
        handle = info.handle.lower() if (info.handle and verified) else None
        self._keys.put(did, info.signing_key or "", ttl)
        if not await self._stored(did):  # learned from a request, not the firehose: memory only
            self._docs.put(did, info, ttl)
            return handle
        async with self._write_lock:
            async with write_transaction(self.conn):
                cur = await self.conn.execute("SELECT handle FROM actor WHERE did = ?", (did,))
                row = await cur.fetchone()
                if handle:  # handle contention: the newest verified holder keeps it
                    await self.conn.execute("UPDATE actor SET handle = NULL, handle_verified = 0 "
                                            "WHERE handle = ? AND did != ?", (handle, did))
                await self.conn.execute(
                    "UPDATE actor SET handle = ?, handle_verified = ?, pds = ?, signing_key = ?, resolved_at = ? "
                    "WHERE did = ?", (handle, 1 if handle else 0, info.pds, info.signing_key, time.time(), did))
            cur = await self.conn.execute("SELECT plc_created_at FROM actor WHERE did = ?", (did,))
            born = await cur.fetchone()
        if born and born[0] is None and (created := await self.resolver.plc_created_at(did)):
            async with self._write_lock:  # once per account: the age reputation reads (migration 0018)
                await self.conn.execute("UPDATE actor SET plc_created_at = ? WHERE did = ? AND plc_created_at IS NULL",
                                        (created, did))
        if row and row[0] != handle and self.on_handle_change:
            await self.on_handle_change(did)
        return handle

    async def _stored(self, did: str) -> bool:
        cur = await self.conn.execute("SELECT 1 FROM actor WHERE did = ?", (did,))
        return await cur.fetchone() is not None

    async def did_for_handle(self, handle: str) -> str | None:
        """A handle -> its DID: from the table when verified there, else resolved (and verified)
        now and remembered in memory for ``RETRY_FAILED_S``, found or not."""
        handle = handle.lower().lstrip("@")
        cur = await self.conn.execute("SELECT did FROM actor WHERE handle = ? AND handle_verified = 1", (handle,))
        row = await cur.fetchone()
        if row:
            return row[0]
        cached = self._handles.get(handle)
        if isinstance(cached, str):
            return cached or None
        did = await self.resolver.resolve_handle(handle)
        found = did if did and await self.refresh(did) == handle else None
        self._handles.put(handle, found or "", RETRY_FAILED_S)
        return found

    async def refresh_stale(self) -> int:
        """Queue DIDs never resolved or older than the TTL. Returns how many were queued."""
        cur = await self.conn.execute(
            "SELECT did FROM actor WHERE resolved_at IS NULL OR resolved_at < ?",
            (time.time() - self.settings.identity_ttl_s,))
        rows = await cur.fetchall()
        for (did,) in rows:
            self.schedule(did)
        return len(rows)
