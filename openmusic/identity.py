"""Identity: DIDs (did:plc through the configured PLC directory, did:web) and handles, cached in
the ``actor`` table and refreshed in the background (on ``#identity`` events, for new DIDs, and
when older than ``Settings.identity_ttl_s``).

A handle is shown only when it resolves back to the same DID (atproto handle spec, bidirectional
verification); otherwise views show ``handle.invalid``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import aiosqlite
import httpx
from atproto_core.did_doc import DidDocument
from atproto_identity.handle.resolver import AsyncHandleResolver

from firehose.verify import TransientIdentityError
from openmusic.config import Settings
from openmusic.netguard import BlockedURL, check_url

log = logging.getLogger("openmusic.identity")
INVALID_HANDLE = "handle.invalid"
#: Seconds before a DID whose resolution failed is tried again.
RETRY_FAILED_S = 300
#: Seconds between sweeps for identities older than the TTL.
SWEEP_S = 600


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
        ``/.well-known/did.json``), checked to describe ``did``. Raises ``IdentityError``."""
        if did.startswith("did:plc:"):
            url = f"{self.settings.plc_url.rstrip('/')}/{quote(did)}"
        elif did.startswith("did:web:"):
            host = did[len("did:web:"):]
            if ":" in host:
                raise IdentityError(f"did:web with a path is not supported by atproto: {did}")
            host = host.replace("%3A", ":")
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
            return resp.json().get("did") if resp.status_code == 200 else None
        try:
            await check_url(f"https://{handle}/", self.settings.allow_private_hosts)
        except BlockedURL:
            return None
        try:
            return await self._dns.resolve(handle)
        except Exception:  # dns / http failures: unresolvable
            return None


class IdentityService:
    """Keeps the ``actor`` table's handles, PDS endpoints and signing keys current.

    ``conn`` is a writer connection of its own (not the indexer's). ``schedule(did)`` queues a
    refresh; ``run()`` works the queue (up to 4 at once). ``lookup_handle`` serves queries.
    """

    def __init__(self, settings: Settings, conn: aiosqlite.Connection, resolver: IdentityResolver) -> None:
        self.settings = settings
        self.conn = conn
        self.resolver = resolver
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._write_lock = asyncio.Lock()
        self._keys: dict[str, str | None] = {}
        self.failures = 0
        #: awaited with the DID after its verified handle changed (the indexer refreshes search text)
        self.on_handle_change: Callable[[str], Awaitable[None]] | None = None

    def schedule(self, did: str) -> None:
        """Queue ``did`` for a refresh (deduplicated)."""
        if did not in self._pending:
            self._pending.add(did)
            self.queue.put_nowait(did)

    async def run(self, concurrency: int = 4) -> None:
        """Refresh queued DIDs until cancelled."""
        async def worker() -> None:
            while True:
                did = await self.queue.get()
                try:
                    await self.refresh(did)
                except Exception:  # never let one identity stop the worker
                    log.exception("identity refresh of %s failed", did)
                finally:
                    self._pending.discard(did)
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(SWEEP_S)
                await self.refresh_stale()
        await asyncio.gather(sweeper(), *(worker() for _ in range(concurrency)))

    async def signing_key(self, did: str, refresh: bool = False) -> str | None:
        """``did``'s ``#atproto`` signing key (``did:key``), from memory, the ``actor`` table, or a
        fresh resolution (always with ``refresh``). None when the DID has no document or key.
        Raises ``TransientIdentityError`` when the document cannot be fetched right now."""
        if not refresh:
            if did in self._keys:
                return self._keys[did]
            cur = await self.conn.execute("SELECT signing_key FROM actor WHERE did = ? AND resolved_at IS NOT NULL "
                                          "AND signing_key IS NOT NULL", (did,))
            row = await cur.fetchone()
            if row:
                self._remember(did, row[0])
                return row[0]
        await self.refresh(did, strict=True)
        return self._keys.get(did)

    async def pds(self, did: str) -> str | None:
        """The PDS endpoint in ``did``'s document (resolving it when unknown). Raises
        ``TransientIdentityError`` when the document cannot be fetched right now."""
        cur = await self.conn.execute("SELECT pds FROM actor WHERE did = ? AND resolved_at IS NOT NULL", (did,))
        row = await cur.fetchone()
        if row and row[0]:
            return row[0]
        await self.refresh(did, strict=True)
        cur = await self.conn.execute("SELECT pds FROM actor WHERE did = ?", (did,))
        row = await cur.fetchone()
        return row[0] if row else None

    def _remember(self, did: str, key: str | None) -> None:
        if len(self._keys) > 200_000:
            self._keys.clear()
        self._keys[did] = key

    async def refresh(self, did: str, strict: bool = False) -> str | None:
        """Resolve ``did`` now, verify its handle both ways, store it. Returns the verified handle or None.

        With ``strict``, a transient failure raises ``TransientIdentityError``; a permanent one
        (unknown DID, bad document) forgets the DID's key."""
        try:
            info = await self.resolver.resolve_did(did)
        except IdentityError as exc:
            self.failures += 1
            log.info("cannot resolve %s: %s", did, exc)
            if strict and exc.transient:
                raise TransientIdentityError(str(exc)) from exc
            if not exc.transient:
                self._remember(did, None)
            # keep what we knew, and try again in RETRY_FAILED_S rather than on every request
            async with self._write_lock:
                await self.conn.execute(
                    "INSERT INTO actor (did, resolved_at) VALUES (?, ?) ON CONFLICT (did) DO UPDATE "
                    "SET resolved_at = excluded.resolved_at",
                    (did, time.time() - self.settings.identity_ttl_s + RETRY_FAILED_S))
            return None
        verified = False
        if info.handle:
            verified = (await self.resolver.resolve_handle(info.handle)) == did
        handle = info.handle.lower() if (info.handle and verified) else None
        self._remember(did, info.signing_key)
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                cur = await self.conn.execute("SELECT handle FROM actor WHERE did = ?", (did,))
                row = await cur.fetchone()
                if handle:  # handle contention: the newest verified holder keeps it
                    await self.conn.execute("UPDATE actor SET handle = NULL, handle_verified = 0 "
                                            "WHERE handle = ? AND did != ?", (handle, did))
                await self.conn.execute(
                    "INSERT INTO actor (did, handle, handle_verified, pds, signing_key, resolved_at) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, "
                    "handle_verified = excluded.handle_verified, pds = excluded.pds, "
                    "signing_key = excluded.signing_key, resolved_at = excluded.resolved_at",
                    (did, handle, 1 if handle else 0, info.pds, info.signing_key, time.time()))
                await self.conn.execute("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
        if (not row or row[0] != handle) and self.on_handle_change:
            await self.on_handle_change(did)
        return handle

    async def did_for_handle(self, handle: str) -> str | None:
        """A handle -> its DID: from the cache when verified, else resolved (and verified) now."""
        handle = handle.lower().lstrip("@")
        cur = await self.conn.execute("SELECT did FROM actor WHERE handle = ? AND handle_verified = 1", (handle,))
        row = await cur.fetchone()
        if row:
            return row[0]
        did = await self.resolver.resolve_handle(handle)
        if did and await self.refresh(did) == handle:
            return did
        return None

    async def refresh_stale(self) -> int:
        """Queue DIDs never resolved or older than the TTL. Returns how many were queued."""
        cur = await self.conn.execute(
            "SELECT did FROM actor WHERE resolved_at IS NULL OR resolved_at < ?",
            (time.time() - self.settings.identity_ttl_s,))
        rows = await cur.fetchall()
        for (did,) in rows:
            self.schedule(did)
        return len(rows)
