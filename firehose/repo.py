"""Whole repos: ``com.atproto.sync.getRepo`` fetched from the account's PDS (or a relay, which
redirects there) and loaded as a verified snapshot of our collections (repository spec; used by
resync and backfill).

``load_snapshot`` checks every block against its CID, the commit's DID and signature against the
account's key, and then walks the signed MST over the ``fm.openmusic.*`` key range only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import cbrrr
import httpx
from atmst.blockstore import MemoryBlockStore
from atmst.mst.node_store import NodeStore
from atmst.mst.node_walker import NodeWalker

from core.netguard import BlockedURL, check_url
from firehose.car import CarError, read_car
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
    (``collection/rkey`` -> ``(cid str, record or None when its block is missing/undecodable)``)."""

    did: str
    rev: str
    data: bytes
    records: dict[str, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)


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


def load_snapshot(car: bytes, did: str, did_key: str) -> Snapshot:
    """Verify a repo CAR and read our records. Raises ``VerifyError`` (reasons ``bad_car``,
    ``commit_mismatch``, ``bad_signature``, ``mst_missing_blocks``)."""
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
    snap = Snapshot(did=did, rev=commit["rev"], data=bytes(data))
    try:
        walker = NodeWalker(NodeStore(MemoryBlockStore(blocks)), data)
        for path, cid in walker.iter_kv_range(PREFIX, PREFIX[:-1] + "/"):
            block = blocks.get(bytes(cid))
            record = None
            if block is not None:
                try:
                    value = cbrrr.decode_dag_cbor(block)
                    record = value if isinstance(value, dict) else None
                except Exception:
                    record = None
            snap.records[path] = (cid.encode("base32"), record)
    except KeyError as exc:
        raise VerifyError("mst_missing_blocks", f"the repo CAR lacks MST blocks: {exc}") from exc
    return snap
