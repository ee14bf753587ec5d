"""Audio and images from the creators' own PDSes (``com.atproto.sync.getBlob``), verified against
their CID (sha2-256), cached on disk by CID, and served with HTTP Range support (Starlette's
``FileResponse``), so a browser ``<audio>`` element can seek."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import httpx
from multiformats import CID

from openmusic.netguard import BlockedURL, check_url

log = logging.getLogger("openmusic.blobs")


class BlobError(Exception):
    """The blob could not be fetched or did not match its CID. ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class BlobStore:
    """Disk cache of verified blobs under ``root`` (``<root>/<cid[-2:]>/<cid>``)."""

    def __init__(self, root: str, http: httpx.AsyncClient, allow_private_hosts: bool, max_bytes: int) -> None:
        self.root = Path(root)
        self.http = http
        self.allow_private_hosts = allow_private_hosts
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetched = 0
        self.rejected = 0

    def path(self, cid: str) -> Path:
        return self.root / cid[-2:] / cid

    async def get(self, did: str, cid: str, pds: str) -> Path:
        """Path of the verified blob ``cid`` of ``did``, fetching it from ``pds`` if not cached.

        Raises ``BlobError`` (400 bad CID, 502 PDS failure or mismatch, 413 too large, 403 blocked host).
        """
        try:
            parsed = CID.decode(cid)
        except Exception as exc:
            raise BlobError(400, "InvalidRequest", f"not a CID: {cid}") from exc
        if parsed.hashfun.name != "sha2-256":
            raise BlobError(400, "InvalidRequest", f"unsupported hash in {cid}")
        cid = parsed.encode("base32")
        path = self.path(cid)
        if path.exists():
            return path
        lock = self._locks.setdefault(cid, asyncio.Lock())
        async with lock:
            if not path.exists():
                await self._fetch(did, parsed, pds, path)
        self._locks.pop(cid, None)
        return path

    async def _fetch(self, did: str, cid: CID, pds: str, path: Path) -> None:
        name = cid.encode("base32")
        url = f"{pds.rstrip('/')}/xrpc/com.atproto.sync.getBlob"
        try:
            await check_url(url, self.allow_private_hosts)
        except BlockedURL as exc:
            raise BlobError(403, "BlockedHost", str(exc)) from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            async with self.http.stream("GET", url, params={"did": did, "cid": name}, timeout=60) as resp:
                if resp.status_code != 200:
                    raise BlobError(502, "UpstreamFailure", f"PDS answered {resp.status_code} for blob {name}")
                with open(tmp, "wb") as out:  # noqa: ASYNC230 (64 KiB local writes; cheap)
                    async for chunk in resp.aiter_bytes(1 << 16):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise BlobError(413, "BlobTooLarge", f"blob {name} is over {self.max_bytes} bytes")
                        digest.update(chunk)
                        out.write(chunk)
            if digest.digest() != cid.raw_digest:
                self.rejected += 1
                raise BlobError(502, "BlobMismatch", f"the PDS's bytes for {name} do not match the CID")
            os.replace(tmp, path)
            self.fetched += 1
        except httpx.HTTPError as exc:
            raise BlobError(502, "UpstreamFailure", f"fetching blob {name}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
