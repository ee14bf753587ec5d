"""Commit verification (atproto sync spec, "Message Validation Checklist"; repository spec,
"Commit Objects" and "MST inversion").

For each ``#commit`` we index, ``verify_commit`` checks, in order:
  1. the message's ``repo``, ``rev`` and ``commit`` CID match the signed commit block in the CAR slice;
  2. the commit's signature (over its DAG-CBOR without ``sig``, sha-256) against the account's
     ``#atproto`` key: k256 through coincurve (libsecp256k1, which refuses high-S signatures),
     p256 through the atproto SDK's ``atproto_crypto`` (which also refuses high-S);
  3. each op we index is proven by the signed MST: a create/update's path maps to the op's CID,
     a delete's path is absent (atmst ``NodeWalker`` over the slice's blocks);
  4. with ``prevData``: inverting every op of the commit (atmst ``NodeWrangler``) yields ``prevData``.

Libraries: atmst (David Buchanan's MST implementation, cbrrr-based) does the MST walking and
inversion; our ``firehose.car`` reader already checks every block against its CID.
``Verifier.check_batch`` fetches keys (refreshing the DID document once on a bad signature) and
marks failing commits with ``CommitEvent.rejected``. The MST work is pure Python (~0.3 ms a
commit), so a busy batch is verified in worker processes (``Proof`` is the picklable material),
in parallel with the consumer decoding the next batch.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import cbrrr
import coincurve
from atmst.blockstore import MemoryBlockStore
from atmst.mst.node_store import NodeStore
from atmst.mst.node_walker import NodeWalker
from atmst.mst.node_wrangler import NodeWrangler
from atproto_crypto.consts import SECP256K1_JWT_ALG
from atproto_crypto.did import parse_did_key
from atproto_crypto.verify import verify_signature

from core.errors import TransientIdentityError  # noqa: F401 (re-exported for the verifier's callers)
from firehose.car import cid_str
from firehose.events import CommitEvent

TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
#: Revs further than this in the future are rejected (the reference relay uses 5 minutes).
FUTURE_REV_TOLERANCE_S = 300


class VerifyError(ValueError):
    """A commit failed verification; ``reason`` is a short key for counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeySource(Protocol):
    """Where signing keys come from (``core.identity.IdentityService``)."""

    async def signing_key(self, did: str, refresh: bool = False) -> str | None:
        """The DID's ``#atproto`` key as a ``did:key``; None if it has none. ``refresh`` re-resolves
        the DID document. Raises ``TransientIdentityError`` when resolution failed for now."""


def tid_timestamp_s(tid: str) -> float:
    """Seconds since the epoch encoded in a TID (atproto TID spec: 53 bits of microseconds, then 10 bits of clock id)."""
    value = 0
    for ch in tid:
        value = value * 32 + TID_ALPHABET.index(ch)
    return (value >> 10) / 1_000_000


@functools.lru_cache(maxsize=65536)
def _k256_key(did_key: str) -> coincurve.PublicKey | None:
    """The parsed k256 public key of a ``did:key`` (cached: parsing costs as much as verifying);
    None for other curves. Raises ``ValueError`` on a malformed key."""
    parsed = parse_did_key(did_key)
    if parsed.jwt_alg != SECP256K1_JWT_ALG:
        return None
    return coincurve.PublicKey(parsed.key_bytes)


def check_signature(did_key: str, message: bytes, sig: bytes) -> bool:
    """True if ``sig`` (64-byte compact r||s, low-S) signs sha-256(``message``) under ``did_key``."""
    try:
        k256 = _k256_key(did_key)
    except (ValueError, TypeError):
        return False
    if k256 is not None:
        if len(sig) != 64:
            return False
        try:
            der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(sig))
            return k256.verify(der, message)
        except (ValueError, TypeError):
            return False
    try:
        return verify_signature(did_key, message, sig)
    except Exception:  # cryptography raises on malformed or high-S signatures
        return False


@dataclass(frozen=True, slots=True)
class Proof:
    """A commit's verification material, without decoded records (cheap to send to a worker).

    ``blocks``: binary CID -> raw block (None when the CAR slice was broken, ``blocks_error`` says
    why); ``root``: the CAR root; ``commit_raw``: the message's commit CID; ``checks``: ``(path,
    cid str or None for a delete)`` for each op we index; ``all_ops``: every op as ``(action, path,
    cid, prev)`` as binary CIDs; ``prev_data``: binary CID or None.
    """

    did: str
    rev: str
    commit: str
    blocks: dict[bytes, bytes] | None
    blocks_error: str | None
    root: bytes | None
    commit_raw: bytes | None
    checks: tuple[tuple[str, str | None], ...]
    all_ops: tuple[tuple[str, str, bytes | None, bytes | None], ...]
    prev_data: bytes | None


def proof_of(evt: CommitEvent) -> Proof:
    """The verification material of a decoded ``#commit``."""
    return Proof(did=evt.did, rev=evt.rev, commit=evt.commit, blocks=evt.blocks, blocks_error=evt.blocks_error,
                 root=evt.root, commit_raw=evt.commit_raw,
                 checks=tuple((f"{op.collection}/{op.rkey}", None if op.action == "delete" else op.cid)
                              for op in evt.ops),
                 all_ops=tuple(evt.all_ops), prev_data=evt.prev_data)


def verify_commit(evt: CommitEvent, did_key: str, now: float | None = None) -> bool:
    """Verify ``evt`` against the signing key ``did_key``. Raises ``VerifyError``.

    Returns True when the MST inversion to ``prevData`` was checked too, False when the commit
    could not be inverted (no ``prevData``, or an update/delete op without ``prev``)."""
    return verify_proof(proof_of(evt), did_key, now)


def verify_proof(evt: Proof, did_key: str, now: float | None = None) -> bool:
    """``verify_commit`` on a ``Proof``. Raises ``VerifyError``."""
    if evt.blocks is None or evt.root is None:
        raise VerifyError("bad_car", evt.blocks_error or "commit has no CAR slice")
    if tid_timestamp_s(evt.rev) > (now or time.time()) + FUTURE_REV_TOLERANCE_S:
        raise VerifyError("future_rev", f"rev {evt.rev} is more than 5 minutes in the future")
    root_block = evt.blocks.get(evt.root)
    if root_block is None:
        raise VerifyError("bad_car", "the commit block is not in the CAR slice")
    try:
        commit = cbrrr.decode_dag_cbor(root_block)
    except Exception as exc:
        raise VerifyError("bad_car", f"commit block is not DAG-CBOR: {exc}") from exc
    if not isinstance(commit, dict) or not isinstance(commit.get("sig"), bytes):
        raise VerifyError("commit_mismatch", "commit block is not a signed commit")
    if commit.get("did") != evt.did or commit.get("rev") != evt.rev or evt.root != evt.commit_raw:
        raise VerifyError("commit_mismatch", "repo, rev or commit CID differ from the signed commit")
    unsigned = {k: v for k, v in commit.items() if k != "sig"}
    if not check_signature(did_key, cbrrr.encode_dag_cbor(unsigned), commit["sig"]):
        raise VerifyError("bad_signature", f"commit {evt.commit} is not signed by {did_key}")
    data = commit.get("data")
    if not isinstance(data, cbrrr.CID):
        raise VerifyError("commit_mismatch", "commit has no MST root")
    store = NodeStore(MemoryBlockStore(dict(evt.blocks)))
    try:
        walker_root = data
        for path, expected in evt.checks:
            found = NodeWalker(store, walker_root).find_rpath(path)
            if (cid_str(found) if found is not None else None) != expected:
                action = "delete" if expected is None else "create/update"
                raise VerifyError("not_in_mst", f"{action} {path} is not what the signed MST holds")
        if evt.prev_data is not None:
            wrangler = NodeWrangler(store)
            root = data
            for action, path, _cid, prev in reversed(evt.all_ops):
                if action == "create":
                    root = wrangler.del_record(root, path)
                elif prev is None:
                    return False  # an update/delete without prev (older PDS): inversion is not possible
                else:
                    root = wrangler.put_record(root, path, cbrrr.CID(prev))
            if bytes(root) != evt.prev_data:
                raise VerifyError("prev_data_mismatch", "inverting the ops does not give prevData")
            return True
    except KeyError as exc:
        raise VerifyError("mst_missing_blocks", f"the CAR slice lacks MST blocks: {exc}") from exc
    return False


def verify_many(jobs: list[tuple[Proof, str]], now: float) -> list[tuple[str | None, str | None, bool]]:
    """Verify ``(proof, did_key)`` pairs (in a worker process); per pair ``(reason, detail, inverted)``,
    ``reason`` None when the commit verified."""
    out: list[tuple[str | None, str | None, bool]] = []
    for proof, key in jobs:
        try:
            out.append((None, None, verify_proof(proof, key, now)))
        except VerifyError as exc:
            out.append((exc.reason, str(exc), False))
        except Exception as exc:  # a signed commit over a hostile MST makes atmst raise: reject it, never stop
            out.append(("unverifiable", f"{type(exc).__name__}: {exc}"[:500], False))
    return out


#: ``prctl`` option: the signal the kernel sends this process when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: How often (s) a worker's watcher checks that the process that started it is still its parent.
PARENT_POLL_S = 1.0


def _watch_parent(parent_pid: int, parent_alive: multiprocessing.connection.Connection) -> None:
    """A worker's daemon thread: exit the worker at once when the pool's parent is gone, which it sees
    as EOF on ``parent_alive`` (the parent holds the only write end, closed when it dies however it
    dies) or as a change of ``os.getppid()`` (re-parented to init or a subreaper). Never returns."""
    while True:
        try:
            if parent_alive.poll(PARENT_POLL_S):  # readable: EOF (nothing is ever sent)
                break
        except (OSError, EOFError):
            break
        if os.getppid() != parent_pid:
            break
    os._exit(1)


def _worker_init(parent_pid: int, parent_alive: multiprocessing.connection.Connection, deathsig: bool) -> None:
    """Initializer of each verification worker process: make it exit when the process that started
    the pool dies, even by SIGKILL or the OOM killer (otherwise the worker, blocked on its call queue,
    and the pool's resource tracker, which waits for every holder of its pipe, would run forever).

    ``parent_pid``: the pool's parent; ``parent_alive``: the read end of a pipe whose write end only
    the parent holds; ``deathsig``: on Linux, also ask the kernel for SIGKILL when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``, immediate). The kernel sends it when the *thread* that spawned the
    worker ends, so the parent passes True only when that thread is its main thread. The portable
    watcher thread (``_watch_parent``) runs in every case."""
    if deathsig and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no usable libc: the watcher below still applies
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, parent_alive), name="openmusic-parent-watch",
                     daemon=True).start()


class Verifier:
    """Verifies the commits of a batch before the indexer applies it (outside its transaction).

    ``workers``: processes for the MST and signature work of busy batches (0: all in this
    process); batches of fewer than ``pool_min`` commits are verified here, where a process hop
    would cost more than it saves. ``counters`` counts verified commits and rejections by reason.
    Call ``close()`` to stop the workers; they also exit by themselves within about a second when
    this process dies, however it dies (``_worker_init``).
    """

    def __init__(self, keys: KeySource, workers: int = 0, pool_min: int = 32) -> None:
        self.keys = keys
        self.workers = workers
        self.pool_min = pool_min
        self.counters: Counter[str] = Counter()
        self._pool: ProcessPoolExecutor | None = None
        self._parent_end: multiprocessing.connection.Connection | None = None

    async def start(self) -> None:
        """Start the worker processes now (they import the verification code, ~1 s), rather than
        on the first busy batch. All of them are spawned here, from the calling thread."""
        if self.workers > 0 and self._pool is None:
            # spawn: the consumer process has threads (the indexer's writer), which fork would copy mid-state
            ctx = multiprocessing.get_context("spawn")
            # Workers watch the read end; the write end stays here alone (pipes are not inherited by
            # spawned or subprocess children), so its EOF in a worker means this process is gone.
            child_end, self._parent_end = ctx.Pipe(duplex=False)
            deathsig = threading.current_thread() is threading.main_thread()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                             initargs=(os.getpid(), child_end, deathsig))
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self._pool, verify_many, [], 0.0)
                                   for _ in range(self.workers)))

    def close(self) -> None:
        """Stop the worker processes (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._parent_end is not None:
            self._parent_end.close()
            self._parent_end = None

    async def check_batch(self, events: list) -> None:
        """Set ``rejected`` on each commit (with ops) that fails. Raises ``TransientIdentityError``
        when a key cannot be fetched for now (the batch must be retried, not dropped)."""
        todo = [evt for evt in events if isinstance(evt, CommitEvent) and (evt.ops or evt.commit_raw is not None)
                and evt.rejected is None]
        if not todo:
            return
        keys = [await self.keys.signing_key(evt.did) for evt in todo]
        now = time.time()
        jobs = [(proof_of(evt), key) for evt, key in zip(todo, keys, strict=True) if key is not None]
        if self.workers > 0 and len(jobs) >= self.pool_min:
            results = await self._in_pool(jobs, now)
        else:
            results = verify_many(jobs, now)
        it = iter(results)
        for evt, key in zip(todo, keys, strict=True):
            if key is None:
                evt.rejected = "no_signing_key"
                self.counters["no_signing_key"] += 1
                continue
            reason, detail, inverted = next(it)
            if reason == "bad_signature":  # the key may have rotated: refresh the DID document once
                key = await self.keys.signing_key(evt.did, refresh=True)
                reason, detail, inverted = verify_many([(proof_of(evt), key)], now)[0] if key else \
                    ("no_signing_key", None, False)
            if reason is None:
                self.counters["verified"] += 1
                if not inverted:
                    self.counters["not_inverted"] += 1
            else:
                evt.rejected, evt.rejected_detail = reason, detail
                self.counters[reason] += 1

    async def _in_pool(self, jobs: list[tuple[Proof, str]], now: float) -> list[tuple[str | None, str | None, bool]]:
        if self._pool is None:
            await self.start()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        size = -(-len(jobs) // self.workers)
        chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        parts = await asyncio.gather(*(loop.run_in_executor(self._pool, verify_many, chunk, now) for chunk in chunks))
        return [r for part in parts for r in part]
