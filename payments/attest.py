"""CID-first inline attestations (the badge.blue scheme that atprotofans and attested.network use),
for the broker's ``fm.openmusic.payment.settlement`` records.

The signed bytes are the CIDv1 (dag-cbor, sha2-256) of the record with ``signatures`` removed and
``$sig = {"$type": "fm.openmusic.payment.defs#sigMeta", "repository": <repo DID>, "key": <key id>}``
added. Binding the repository means a copy in another repo does not verify. The signature is ECDSA
k256 (libsecp256k1 through coincurve: deterministic, low-S) in the 64-byte r||s form atproto uses,
over sha-256 of the CID bytes; ``firehose.verify.check_signature`` checks it (k256 or p256).
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbrrr
import coincurve
from atproto_crypto.consts import SECP256K1_JWT_ALG
from atproto_crypto.did import format_did_key, format_multikey

from firehose.verify import check_signature

SIG_META = "fm.openmusic.payment.defs#sigMeta"
SIG_TYPE = "fm.openmusic.payment.defs#inlineSignature"


def attestation_cid(record: dict[str, Any], repository: str, key_id: str) -> bytes:
    """The binary CID that a signature covers (see the module docstring). ``record`` is in the
    atproto data model (bytes as ``bytes``). Raises ``ValueError`` if it cannot be DAG-CBOR encoded."""
    body = {k: v for k, v in record.items() if k != "signatures"}
    body["$sig"] = {"$type": SIG_META, "repository": repository, "key": key_id}
    return bytes(cbrrr.CID.cidv1_dag_cbor_sha256_32_from(cbrrr.encode_dag_cbor(body)))


class Signer:
    """An attestation key (k256). ``key_id`` is its DID URL (``did:web:host#attestation``).

    ``secret_hex``: 32-byte private key as hex (from ``OPENMUSIC_ATTESTATION_KEY``; never logged).
    Raises ``ValueError`` on a malformed key."""

    def __init__(self, secret_hex: str, key_id: str) -> None:
        self._key = coincurve.PrivateKey(bytes.fromhex(secret_hex.strip()))
        self.key_id = key_id
        public = self._key.public_key.format(compressed=True)
        #: ``publicKeyMultibase`` for the DID document's ``Multikey`` verification method.
        self.multikey = format_multikey(SECP256K1_JWT_ALG, public)
        self.did_key = format_did_key(SECP256K1_JWT_ALG, public)

    def sign(self, record: dict[str, Any], repository: str) -> dict[str, Any]:
        """``record`` with ``signatures`` = [this key's inline signature] (data model form)."""
        cid = attestation_cid(record, repository, self.key_id)
        sig = self._key.sign_recoverable(cid, hasher=lambda m: hashlib.sha256(m).digest())[:64]
        return {**record, "signatures": [{"$type": SIG_TYPE, "key": self.key_id, "signature": sig}]}


def verify(record: dict[str, Any], repository: str, did_key_of: dict[str, str]) -> str | None:
    """Check ``record``'s inline signatures; ``did_key_of`` maps key ids to ``did:key`` strings (from
    the signer's DID document). Returns the key id that verified, or None when none does."""
    for sig in record.get("signatures") or []:
        if not isinstance(sig, dict) or not isinstance(sig.get("signature"), bytes):
            continue
        key_id = sig.get("key")
        did_key = did_key_of.get(key_id) if isinstance(key_id, str) else None
        if did_key and check_signature(did_key, attestation_cid(record, repository, key_id), sig["signature"]):
            return key_id
    return None


def new_secret() -> str:
    """A fresh k256 private key as hex (for ``OPENMUSIC_ATTESTATION_KEY`` in development)."""
    return coincurve.PrivateKey().secret.hex()
