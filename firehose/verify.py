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
marks failing commits with ``CommitEvent.rejected``.
"""

from __future__ import annotations

import time
from collections import Counter
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

from firehose.consumer import RetryLater
from firehose.events import CommitEvent

TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
#: Revs further than this in the future are rejected (the reference relay uses 5 minutes).
FUTURE_REV_TOLERANCE_S = 300


class VerifyError(ValueError):
    """A commit failed verification; ``reason`` is a short key for counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TransientIdentityError(RetryLater):
    """A signing key could not be fetched for now (network error, PLC 5xx): retry the batch later."""


class KeySource(Protocol):
    """Where signing keys come from (``openmusic.identity.IdentityService``)."""

    async def signing_key(self, did: str, refresh: bool = False) -> str | None:
        """The DID's ``#atproto`` key as a ``did:key``; None if it has none. ``refresh`` re-resolves
        the DID document. Raises ``TransientIdentityError`` when resolution failed for now."""


def tid_timestamp_s(tid: str) -> float:
    """Seconds since the epoch encoded in a TID (atproto TID spec: 53 bits of microseconds, then 10 bits of clock id)."""
    value = 0
    for ch in tid:
        value = value * 32 + TID_ALPHABET.index(ch)
    return (value >> 10) / 1_000_000


def check_signature(did_key: str, message: bytes, sig: bytes) -> bool:
    """True if ``sig`` (64-byte compact r||s, low-S) signs sha-256(``message``) under ``did_key``."""
    parsed = parse_did_key(did_key)
    if parsed.jwt_alg == SECP256K1_JWT_ALG:
        if len(sig) != 64:
            return False
        try:
            der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(sig))
            return coincurve.PublicKey(parsed.key_bytes).verify(der, message)
        except (ValueError, TypeError):
            return False
    try:
        return verify_signature(did_key, message, sig)
    except Exception:  # cryptography raises on malformed or high-S signatures
        return False


def verify_commit(evt: CommitEvent, did_key: str, now: float | None = None) -> bool:
    """Verify ``evt`` against the signing key ``did_key``. Raises ``VerifyError``.

    Returns True when the MST inversion to ``prevData`` was checked too, False when the commit
    could not be inverted (no ``prevData``, or an update/delete op without ``prev``)."""
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
        for op in evt.ops:
            found = NodeWalker(store, walker_root).find_rpath(f"{op.collection}/{op.rkey}")
            expected = None if op.action == "delete" else op.cid
            if (found.encode() if found is not None else None) != expected:
                raise VerifyError("not_in_mst", f"{op.action} {op.collection}/{op.rkey} is not what the signed MST holds")
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


class Verifier:
    """Verifies the commits of a batch before the indexer applies it (outside its transaction).

    ``counters`` counts verified commits and rejections by reason.
    """

    def __init__(self, keys: KeySource) -> None:
        self.keys = keys
        self.counters: Counter[str] = Counter()

    async def check_batch(self, events: list) -> None:
        """Set ``rejected`` on each commit (with ops) that fails. Raises ``TransientIdentityError``
        when a key cannot be fetched for now (the batch must be retried, not dropped)."""
        for evt in events:
            if isinstance(evt, CommitEvent) and (evt.ops or evt.commit_raw is not None) and evt.rejected is None:
                await self._check(evt)

    async def _check(self, evt: CommitEvent) -> None:
        key = await self.keys.signing_key(evt.did)
        for attempt in range(2):
            if key is None:
                evt.rejected = "no_signing_key"
                break
            try:
                if not verify_commit(evt, key):
                    self.counters["not_inverted"] += 1
                evt.rejected = None
                self.counters["verified"] += 1
                return
            except VerifyError as exc:
                evt.rejected, evt.rejected_detail = exc.reason, str(exc)
                if exc.reason != "bad_signature" or attempt:
                    break
                key = await self.keys.signing_key(evt.did, refresh=True)  # the key may have rotated
        self.counters[evt.rejected or "unknown"] += 1
