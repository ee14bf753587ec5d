"""Audio and images from the creators' own PDSes (``com.atproto.sync.getBlob``), verified against
their CID (sha2-256), cached on disk by CID, and served with HTTP Range support (Starlette's
``FileResponse``), so a browser ``<audio>`` element can seek.

The cache is trusted by construction: a blob reaches its final name only after its bytes matched
the CID, were fsynced and atomically renamed there, so a cached file is served without re-hashing.
It is bounded (least recently served blobs evicted past ``cache_max_bytes``). A disk that cannot be
written answers 503 ``BlobCacheUnavailable``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import httpx
from multiformats import CID
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from core.mediatype import FALLBACK, blob_media_type
from core.netguard import BlockedURL, check_url

log = logging.getLogger("openmusic.blobs")

#: Default bound of the blob cache, bytes (``Settings.blob_cache_max_bytes``).
DEFAULT_CACHE_MAX_BYTES = 2 * 1024 ** 3
#: Temporary files of fetches still under way end in this; ones older than ``STALE_PART_S`` seconds
#: (left by a killed process) are removed when the cache is scanned at startup.
PART_SUFFIX = ".part"
STALE_PART_S = 3600
IMMUTABLE = "public, max-age=31536000, immutable"
#: Every blob response: no script, no plugins, no sniffing into another type, even when opened as a page.
BLOB_CSP = "sandbox; default-src 'none'"
#: RFC 9110 §14.1.1 ``range-spec`` of the ``bytes`` unit: ``first-last``, ``first-``, ``-suffix`` (numbers
#: of at most 4000 digits: Python, and so Starlette, parses no longer ones).
_RANGE_SPEC = re.compile(r"([0-9]{1,4000})-([0-9]{0,4000})|-([0-9]{1,4000})")


class BlobError(Exception):
    """The blob could not be fetched or did not match its CID. ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class _CidLock:
    """A per-CID lock and how many requests use it (the entry is dropped when the last one leaves)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class BlobStore:
    """Disk cache of verified blobs under ``root`` (``<root>/<cid[-2:]>/<cid>``), at most
    ``cache_max_bytes`` bytes of them (least recently served evicted first; a single blob larger than
    the bound is still kept until the next fetch). Blobs over ``max_bytes`` are refused.

    The constructor scans ``root`` (sizes and modification times: the LRU order survives restarts, a
    serve touches the file) and removes stale temporary files; an unreadable ``root`` starts empty."""

    def __init__(self, root: str, http: httpx.AsyncClient, allow_private_hosts: bool, max_bytes: int,
                 cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        self.root = Path(root)
        self.http = http
        self.allow_private_hosts = allow_private_hosts
        self.max_bytes = max_bytes
        self.cache_max_bytes = cache_max_bytes
        self._locks: dict[str, _CidLock] = {}
        #: CID -> size in bytes, least recently served first.
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.cached_bytes = 0
        self.fetched = 0
        self.rejected = 0
        self.evicted = 0
        self._scan()

    def path(self, cid: str) -> Path:
        """Where blob ``cid`` (base32 CID string) is cached."""
        return self.root / cid[-2:] / cid

    def _scan(self) -> None:
        found: list[tuple[float, str, int]] = []
        now = time.time()
        try:
            shards = [d for d in self.root.iterdir() if d.is_dir()]
        except FileNotFoundError:
            shards = []
        except OSError as exc:
            log.warning("cannot scan the blob cache %s: %s", self.root, exc)
            shards = []
        for shard in shards:
            try:
                entries = list(shard.iterdir())
            except OSError as exc:
                log.warning("cannot scan the blob cache folder %s: %s", shard, exc)
                continue
            for entry in entries:
                try:
                    st = entry.stat()
                    if entry.name.endswith(PART_SUFFIX):
                        if now - st.st_mtime > STALE_PART_S:
                            entry.unlink()
                    elif entry.is_file() and entry.name[-2:] == shard.name:
                        found.append((st.st_mtime, entry.name, st.st_size))
                except OSError:
                    continue
        for _mtime, cid, size in sorted(found):
            self._remember(cid, size)
        if self.cached_bytes > self.cache_max_bytes:
            self._evict(keep=None)

    def _remember(self, cid: str, size: int) -> None:
        self.cached_bytes += size - self._sizes.pop(cid, 0)
        self._sizes[cid] = size

    def _touch(self, cid: str, path: Path) -> None:
        """Mark ``cid`` most recently served (in memory, and its mtime for the next startup)."""
        if cid in self._sizes:
            self._sizes.move_to_end(cid)
        else:  # put there by someone else (another process sharing the directory)
            with contextlib.suppress(OSError):
                self._remember(cid, path.stat().st_size)
        with contextlib.suppress(OSError):  # a read-only disk still serves what it holds
            os.utime(path)

    def _evict(self, keep: str | None) -> None:
        """Remove least recently served blobs (never ``keep``) until the cache is within its bound."""
        for cid in list(self._sizes):
            if self.cached_bytes <= self.cache_max_bytes:
                break
            if cid == keep:
                continue
            self.cached_bytes -= self._sizes.pop(cid)
            self.evicted += 1
            try:
                self.path(cid).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot evict cached blob %s: %s", cid, exc)

    async def get(self, did: str, cid: str, pds: str) -> Path:
        """Path of the verified blob ``cid`` of ``did``, fetching it from ``pds`` if not cached.

        Raises ``BlobError``: 400 bad CID, 403 blocked host, 413 over ``max_bytes``, 502 PDS failure
        or bytes not matching the CID, 503 ``BlobCacheUnavailable`` when the cache cannot be written.
        """
        try:
            parsed = CID.decode(cid)
        except Exception as exc:
            raise BlobError(400, "InvalidRequest", f"not a CID: {cid}") from exc
        if parsed.hashfun.name != "sha2-256":
            raise BlobError(400, "InvalidRequest", f"unsupported hash in {cid}")
        cid = parsed.encode("base32")
        path = self.path(cid)
        if path.is_file():
            self._touch(cid, path)
            return path
        entry = self._locks.setdefault(cid, _CidLock())
        entry.users += 1
        try:
            async with entry.lock:
                if not path.is_file():
                    await self._fetch(did, parsed, pds, path)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[cid]
        self._touch(cid, path)
        return path

    @contextlib.contextmanager
    def _disk(self, what: str) -> Iterator[None]:
        """Turn an ``OSError`` (read-only or full disk, permissions) into 503 ``BlobCacheUnavailable``."""
        try:
            yield
        except OSError as exc:
            log.warning("blob cache %s: %s failed: %s", self.root, what, exc)
            raise BlobError(503, "BlobCacheUnavailable",
                            f"the blob cache cannot store blobs right now ({what}: {exc.strerror or exc})") from exc

    async def _fetch(self, did: str, cid: CID, pds: str, path: Path) -> None:
        """Download ``cid`` from ``pds`` into a temporary file beside ``path`` (a unique name per fetch),
        check it against the CID, fsync it and rename it to ``path``. Raises ``BlobError``."""
        name = cid.encode("base32")
        url = f"{pds.rstrip('/')}/xrpc/com.atproto.sync.getBlob"
        try:
            await check_url(url, self.allow_private_hosts)
        except BlockedURL as exc:
            raise BlobError(403, "BlockedHost", str(exc)) from exc
        with self._disk("creating a temporary file"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=PART_SUFFIX)
        try:
            with self._disk("writing the blob"):
                with os.fdopen(fd, "wb") as out:
                    size = await self._download(url, did, cid, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp_name, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)  # gone once renamed
        self._fsync_dir(path.parent)
        self.fetched += 1
        self._remember(name, size)
        self._evict(keep=name)

    async def _download(self, url: str, did: str, cid: CID, out: BinaryIO) -> int:
        """Stream the blob into ``out``; its size in bytes once its sha256 matched ``cid``. Raises
        ``BlobError`` (502, 413) and ``OSError`` from writing."""
        name = cid.encode("base32")
        digest = hashlib.sha256()
        size = 0
        try:
            async with self.http.stream("GET", url, params={"did": did, "cid": name}, timeout=60) as resp:
                if resp.status_code != 200:
                    raise BlobError(502, "UpstreamFailure", f"PDS answered {resp.status_code} for blob {name}")
                async for chunk in resp.aiter_bytes(1 << 16):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise BlobError(413, "BlobTooLarge", f"blob {name} is over {self.max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)  # 64 KiB local writes; cheap
        except httpx.HTTPError as exc:
            raise BlobError(502, "UpstreamFailure", f"fetching blob {name}: {exc}") from exc
        if digest.digest() != cid.raw_digest:
            self.rejected += 1
            raise BlobError(502, "BlobMismatch", f"the PDS's bytes for {name} do not match the CID")
        return size

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        """Make the rename durable (best effort: not every filesystem lets a folder be fsynced)."""
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def valid_range(header: str) -> bool:
    """True when ``header`` (a ``Range`` value) is a well-formed RFC 9110 ``bytes`` range set:
    comma-separated ``first-last`` (last >= first), ``first-`` or ``-suffix``, optional whitespace
    around each. Anything else (another unit, ``bytes=abc``, ``bytes=5-2``) is to be ignored (§14.2)."""
    unit, sep, ranges = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return False
    specs = [s.strip(" \t") for s in ranges.split(",")]
    if not any(specs):
        return False
    for spec in specs:
        if not spec:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        m = _RANGE_SPEC.fullmatch(spec)
        if m is None:
            return False
        if m.group(2) and int(m.group(2)) < int(m.group(1)):
            return False
    return True


class BlobResponse(FileResponse):
    """``FileResponse`` for a cached blob that ignores a malformed ``Range`` header (answering 200 with
    the whole blob, as RFC 9110 §14.2 allows) instead of Starlette's 400. Well-formed ranges give 206,
    or 416 when they start past the end."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers") or []
        ranges = [v for k, v in headers if k == b"range"]
        if ranges and not (len(ranges) == 1 and valid_range(ranges[0].decode("latin-1"))):
            scope = dict(scope, headers=[(k, v) for k, v in headers if k != b"range"])
        await super().__call__(scope, receive, send)


def blob_response(path: Path, declared: object, kind: str) -> BlobResponse:
    """The response serving the cached blob at ``path`` from an ``kind`` route (``"audio"`` or
    ``"image"``). Its type is the record's ``declared`` mime type only when it parses as one allowed
    type (``core.mediatype.blob_media_type``), served ``inline``; anything else is
    ``application/octet-stream`` as an ``attachment``. Every response carries a sandboxing CSP and
    ``nosniff``. Raises ``ValueError`` for an unknown ``kind``."""
    mime = blob_media_type(declared, kind)
    return BlobResponse(path, media_type=mime or FALLBACK, headers={
        "Cache-Control": IMMUTABLE, "Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": BLOB_CSP, "Content-Disposition": "inline" if mime else "attachment"})
