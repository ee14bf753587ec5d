"""Whole repos: ``com.atproto.sync.getRepo`` fetched from the account's PDS (or a relay, which
redirects there) and loaded as a verified snapshot of our collections (repository spec; used by
resync and backfill).

``load_snapshot`` checks every block against its CID, the commit's DID and signature against the
account's key, and then walks the signed MST over the key ranges of the collections asked for
(``collection/`` .. ``collection0``; by default the ``fm.openmusic.*`` range only), so a big
Bluesky repo's likes, follows and the like are never visited. A collection of which only a few
records are wanted (``app.bsky.feed.post``: the posts that share our pages) is walked with the
same ``RecordKeep`` filter the firehose decoder uses (``firehose.events.Selection.keep``): each
record block is searched for a few bytes and only the hits are decoded, so a snapshot holds what a
live stream of the same records would have kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import cbrrr
import httpx
from atmst.blockstore import MemoryBlockStore
from atmst.mst.node_store import NodeStore
from atmst.mst.node_walker import NodeWalker

from core.lexicons import MAX_RECORD_BYTES
from core.netguard import BlockedURL, check_url
from firehose.car import CarError, read_car
from firehose.events import RecordKeep
from firehose.verify import VerifyError, check_signature

#: Largest repo CAR we download (bytes).
MAX_REPO_BYTES = 512 * 1024 * 1024
PREFIX = "fm.openmusic."


class FetchError(Exception):
    """The repo could not be fetched. ``transient`` says whether trying later may help."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class Snapshot:
    """A verified repo: ``rev``, ``data`` (MST root, binary CID), and our records by path
    (``collection/rkey`` -> ``(cid str, record or None when its block is missing/undecodable)``).

    ``collections``: the collections whose records the snapshot holds in full, so that a record of
    one of them that is not in ``records`` is gone from the repo (None: the ``fm.openmusic.``
    namespace, ``covers``). ``errors``: ``path -> (reason, detail)`` for a record whose block is
    there but unusable (``too_large``, ``bad_cbor``, ``not_object``; as ``RecordOp.error``).
    ``walked`` and ``dropped``: records seen in the MST and records left out by a ``keep`` filter,
    by collection.
    """

    did: str
    rev: str
    data: bytes
    records: dict[str, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)
    collections: frozenset[str] | None = None
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    walked: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def covers(self, collection: str) -> bool:
        """Whether the snapshot holds every record of ``collection`` that the repo holds (and that
        its ``keep`` filter, if any, wants)."""
        if self.collections is None:
            return collection.startswith(PREFIX)
        return collection in self.collections


async def fetch_repo(http: httpx.AsyncClient, base_url: str, did: str, allow_private: bool,
                     max_bytes: int = MAX_REPO_BYTES) -> bytes:
    """GET ``{base_url}/xrpc/com.atproto.sync.getRepo?did=`` following up to 3 redirects, each hop
    SSRF-checked. Raises ``FetchError`` (not transient for 400/404: the repo is gone or unknown)."""
    url = f"{base_url.rstrip('/')}/xrpc/com.atproto.sync.getRepo"
    params: dict[str, str] | None = {"did": did}
    for _ in range(4):
        try:
            await check_url(url, allow_private)
        except BlockedURL as exc:
            raise FetchError(str(exc), transient=False) from exc
        try:
            async with http.stream("GET", url, params=params, timeout=120, follow_redirects=False) as resp:
                if resp.is_redirect and "location" in resp.headers:
                    url, params = urljoin(url, resp.headers["location"]), None
                    continue
                if resp.status_code != 200:
                    body = (await resp.aread())[:300].decode(errors="replace")
                    raise FetchError(f"getRepo {did} answered {resp.status_code}: {body}",
                                     transient=resp.status_code >= 500 or resp.status_code == 429)
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"repo {did} is over {max_bytes} bytes", transient=False)
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise FetchError(f"getRepo {did}: {exc}") from exc
    raise FetchError(f"getRepo {did}: too many redirects", transient=False)


def _ranges(collections: Iterable[str] | None) -> list[tuple[str, str]]:
    """MST key ranges ``[start, end)`` that hold the records of ``collections`` (None: our namespace).
    A record key is ``collection/rkey``, and ``/`` (0x2F) sorts just before ``0``."""
    if collections is None:
        return [(PREFIX, PREFIX[:-1] + "/")]
    return [(f"{c}/", f"{c}0") for c in sorted(set(collections))]


def _decode(block: bytes) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """A record block -> ``(record, None)``, or ``(None, (reason, detail))`` as the firehose decoder
    reports it (``firehose.events``): too large, not DAG-CBOR, not a map."""
    if len(block) > MAX_RECORD_BYTES:
        return None, ("too_large", f"record block is {len(block)} bytes, over {MAX_RECORD_BYTES}")
    try:
        value = cbrrr.decode_dag_cbor(block)
    except Exception as exc:
        return None, ("bad_cbor", f"record block is not DAG-CBOR: {type(exc).__name__}: {exc}"[:500])
    if not isinstance(value, dict):
        return None, ("not_object", "record is not a map")
    return value, None


def load_snapshot(car: bytes, did: str, did_key: str, collections: Iterable[str] | None = None,
                  keep: Mapping[str, RecordKeep] | None = None) -> Snapshot:
    """Verify a repo CAR and read the records of ``collections`` (exact NSIDs; None: every
    ``fm.openmusic.*`` collection). For a collection in ``keep``, a record is read only if
    ``keep[c].block(did, rkey, block)`` accepts its block (a missing block: if ``keep[c].removal``
    says an earlier version may be indexed); the others are counted in ``dropped`` and never decoded.

    Raises ``VerifyError`` (reasons ``bad_car``, ``commit_mismatch``, ``bad_signature``,
    ``mst_missing_blocks``)."""
    try:
        roots, blocks = read_car(car)
    except CarError as exc:
        raise VerifyError("bad_car", str(exc)) from exc
    if not roots or roots[0] not in blocks:
        raise VerifyError("bad_car", "the CAR's root commit block is missing")
    commit = cbrrr.decode_dag_cbor(blocks[roots[0]])
    if not isinstance(commit, dict) or commit.get("did") != did or not isinstance(commit.get("sig"), bytes):
        raise VerifyError("commit_mismatch", f"the repo's commit is not a signed commit of {did}")
    unsigned = {k: v for k, v in commit.items() if k != "sig"}
    if not check_signature(did_key, cbrrr.encode_dag_cbor(unsigned), commit["sig"]):
        raise VerifyError("bad_signature", f"the repo's commit is not signed by {did_key}")
    data = commit.get("data")
    if not isinstance(data, cbrrr.CID):
        raise VerifyError("commit_mismatch", "commit has no MST root")
    snap = Snapshot(did=did, rev=commit["rev"], data=bytes(data),
                    collections=None if collections is None else frozenset(collections))
    keep = keep or {}
    store = NodeStore(MemoryBlockStore(blocks))
    try:
        for start, end in _ranges(collections):
            for path, cid in NodeWalker(store, data).iter_kv_range(start, end):
                if not path.startswith(start):
                    continue
                collection, _, rkey = path.partition("/")
                snap.walked[collection] += 1
                block = blocks.get(bytes(cid))
                filt = keep.get(collection)
                if filt is not None and not (filt.removal(did, rkey) if block is None
                                             else filt.block(did, rkey, block)):
                    snap.dropped[collection] += 1
                    continue
                record, error = _decode(block) if block is not None else (None, None)
                if error:
                    snap.errors[path] = error
                snap.records[path] = (cid.encode("base32"), record)
    except KeyError as exc:
        raise VerifyError("mst_missing_blocks", f"the repo CAR lacks MST blocks: {exc}") from exc
    return snap
