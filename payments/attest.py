"""CID-first inline attestations (the badge.blue scheme that atprotofans and attested.network build
on), for the broker's ``fm.openmusic.payment.settlement``, ``.subscription`` and ``.payout`` records.

The construction (badge.blue "CID-First Attestation Specification", section 3 "CID Generation"; also
``docs/verifying-records.md`` with a test vector). For one entry of the record's ``signatures``:

1. take the record without ``signatures``;
2. take the signature entry without ``signature`` and ``cid``, and set ``repository`` = the DID of the
   repo that holds the record: this is ``$sig``. For our entries that is
   ``{"$type": "fm.openmusic.payment.defs#inlineSignature", "key": <key id>, "repository": <DID>}``;
3. insert it as ``$sig``, encode as DAG-CBOR, hash with SHA-256 and wrap as a CIDv1 (dag-cbor codec,
   sha2-256): the *attestation CID*;
4. the signature is ECDSA over SHA-256 of the 36 binary CID bytes, by the key named in ``key`` (a DID
   URL), 64 bytes r||s, low-S. We sign with k256 (libsecp256k1 through coincurve: RFC 6979
   deterministic nonces, low-S); ``firehose.verify.check_signature`` checks k256 or p256.

Our entries also carry ``cid``: the attestation CID as a string (the spec strips it before hashing).

**Legacy records.** Records signed before this construction (entries *without* ``cid``) used a
different ``$sig``: ``{"$type": "fm.openmusic.payment.defs#sigMeta", "repository": <DID>, "key": <key
id>}`` (the same steps otherwise). A verifier tells the two apart by the entry alone: an entry with a
``cid`` field is checked with the scheme's ``$sig``, and its ``cid`` must equal the CID rebuilt; one
without is checked with the legacy ``$sig``. Neither form can pass for the other: the ``$sig`` maps
differ (``$type``), so the CIDs do, and the signature covers one of them. Binding the repository
means a copy in another repo verifies in neither form.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbrrr
import coincurve
from atproto_crypto.consts import SECP256K1_JWT_ALG
from atproto_crypto.did import format_did_key, format_multikey

from firehose.verify import check_signature

#: ``$type`` of our inline signature entries (lexicon ``fm.openmusic.payment.defs#inlineSignature``).
SIG_TYPE = "fm.openmusic.payment.defs#inlineSignature"
#: ``$type`` of the legacy ``$sig`` (entries without ``cid``; lexicon ``fm.openmusic.payment.defs#sigMeta``).
SIG_META = "fm.openmusic.payment.defs#sigMeta"
#: The two constructions, as ``construction()`` names them.
SCHEME, LEGACY = "badge.blue", "legacy"


def construction(entry: dict[str, Any]) -> str:
    """Which ``$sig`` an inline signature entry was made with: ``SCHEME`` when it carries ``cid``,
    else ``LEGACY`` (see the module docstring)."""
    return SCHEME if "cid" in entry else LEGACY


def sig_metadata(entry: dict[str, Any], repository: str) -> dict[str, Any]:
    """The ``$sig`` of ``entry`` (a signature object) for a record in ``repository`` (a DID), per
    badge.blue section 3: the entry without ``signature`` and ``cid``, with ``repository`` set."""
    meta = {k: v for k, v in entry.items() if k not in ("signature", "cid")}
    meta["repository"] = repository
    return meta


def content_cid(record: dict[str, Any], sig: dict[str, Any]) -> bytes:
    """The binary CIDv1 (dag-cbor, sha2-256; 36 bytes) of ``record`` without ``signatures`` and with
    ``$sig`` = ``sig``. ``record`` is in the atproto data model (bytes as ``bytes``, links as
    ``cbrrr.CID``). Raises ``ValueError``/``TypeError`` if it cannot be DAG-CBOR encoded."""
    body = {k: v for k, v in record.items() if k != "signatures"}
    body["$sig"] = sig
    return bytes(cbrrr.CID.cidv1_dag_cbor_sha256_32_from(cbrrr.encode_dag_cbor(body)))


def legacy_sig(repository: str, key_id: str) -> dict[str, Any]:
    """The ``$sig`` of a legacy entry (no ``cid``) by ``key_id`` for a record in ``repository``."""
    return {"$type": SIG_META, "repository": repository, "key": key_id}


def attestation_cid(record: dict[str, Any], entry: dict[str, Any], repository: str) -> bytes:
    """The binary CID that ``entry`` (one of ``record``'s signature objects, or the one about to be
    made) covers, in the construction ``construction(entry)`` names. Raises ``ValueError``/``TypeError``
    on a record that cannot be DAG-CBOR encoded."""
    if construction(entry) == SCHEME:
        return content_cid(record, sig_metadata(entry, repository))
    return content_cid(record, legacy_sig(repository, entry.get("key")))


def cid_string(cid: bytes) -> str:
    """A binary CID as its base32 string (``bafyrei...``)."""
    return cbrrr.CID(cid).encode()


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

    def sign_cid(self, cid: bytes) -> bytes:
        """The 64-byte r||s low-S ECDSA signature of sha-256(``cid``) (RFC 6979: deterministic)."""
        return self._key.sign_recoverable(cid, hasher=lambda m: hashlib.sha256(m).digest())[:64]

    def sign(self, record: dict[str, Any], repository: str) -> dict[str, Any]:
        """``record`` with ``signatures`` = [this key's inline signature] (data model form), made as
        the badge.blue scheme says: ``{"$type": SIG_TYPE, "key", "cid", "signature"}``."""
        entry: dict[str, Any] = {"$type": SIG_TYPE, "key": self.key_id}
        cid = content_cid(record, sig_metadata(entry, repository))
        entry |= {"cid": cid_string(cid), "signature": self.sign_cid(cid)}
        return {**record, "signatures": [entry]}


def check_entry(record: dict[str, Any], entry: Any, repository: str, did_key: str) -> bool:
    """Whether ``entry`` (one of ``record``'s ``signatures``) is a valid inline signature under
    ``did_key`` for ``record`` in ``repository``, in its construction (``construction``); with a
    ``cid``, that must be the CID rebuilt. False on any malformed entry or record."""
    if not isinstance(entry, dict) or not isinstance(entry.get("signature"), bytes):
        return False
    if not isinstance(entry.get("key"), str):
        return False
    try:
        cid = attestation_cid(record, entry, repository)
    except (ValueError, TypeError):
        return False
    if construction(entry) == SCHEME and entry["cid"] != cid_string(cid):
        return False
    return check_signature(did_key, cid, entry["signature"])


def verified_by(record: dict[str, Any], repository: str, did_key_of: dict[str, str]) -> tuple[str, str] | None:
    """The first of ``record``'s inline signatures that verifies, as (key id, construction), or None.
    ``did_key_of`` maps key ids to ``did:key`` strings (from the signer's DID document)."""
    for entry in record.get("signatures") or []:
        key_id = entry.get("key") if isinstance(entry, dict) else None
        did_key = did_key_of.get(key_id) if isinstance(key_id, str) else None
        if did_key and check_entry(record, entry, repository, did_key):
            return key_id, construction(entry)
    return None


def verify(record: dict[str, Any], repository: str, did_key_of: dict[str, str]) -> str | None:
    """Check ``record``'s inline signatures, in either construction; ``did_key_of`` maps key ids to
    ``did:key`` strings (from the signer's DID document). Returns the key id that verified, or None
    when none does."""
    found = verified_by(record, repository, did_key_of)
    return found[0] if found else None


def new_secret() -> str:
    """A fresh k256 private key as hex (for ``OPENMUSIC_ATTESTATION_KEY`` in development)."""
    return coincurve.PrivateKey().secret.hex()
