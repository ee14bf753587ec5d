"""The attestation test vector of docs/verifying-records.md, and both constructions of ``$sig``.

Proves that: (1) ``payments.attest.Signer`` signs a fixed record with a fixed k256 key exactly as the
badge.blue CID-first scheme says ($sig = the signature object without ``signature`` and ``cid``,
plus ``repository``), giving the attestation CID and signature written in the guide; (2) those values
are reproduced by independent code (libipld's DAG-CBOR, ``cryptography``'s RFC 6979 ECDSA with
low-S normalisation), so the vector is not merely our code agreeing with itself; (3) records signed
the legacy way (``$sig`` of ``$type`` ``#sigMeta``, entries without ``cid``) still verify, the two
forms are told apart by the entry's ``cid`` and neither passes for the other; (4) tampering, another
repository, a high-S twin or a wrong ``cid`` fail; (5) the guide's stranger-verifier script, which
imports nothing of ours, agrees on the same vector; (6) the guide shows these exact values.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import cbrrr
import libipld
import pytest
from atproto_crypto.consts import SECP256K1_CURVE_ORDER
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from core.lexicons import SETTLEMENT, from_json, to_json, validate_record
from payments import attest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "verifying-records.md"

# --- The vector (also in docs/verifying-records.md) ----------------------------------------------------
#: sha-256("openmusic attestation test vector"): a published test key, never a real one.
SECRET = "97f3c0facf3cade9fec76775df48dc3ddb2ece8509e72da3912182ff2de235e9"
KEY_ID = "did:web:music.example#attestation"
MULTIKEY = "zQ3shtE4pv7tQDmbbZ8zwNARJnxL8oEK5en8NGUXcwy4m5B7b"
REPOSITORY = "did:plc:brokerbrokerbrokerbroker"
RECORD = {
    "$type": "fm.openmusic.payment.settlement",
    "tip": {"uri": "at://did:plc:listenerlistenerlistener/fm.openmusic.payment.tip/3lbvmjqtvkc2a",
            "cid": "bafyreigzareo5rhcmqfn2u65vnfy42o5iomqjgw2u3f4rzxaotbxg6xw4i"},
    "payer": "did:plc:listenerlistenerlistener",
    "subject": "did:plc:artistartistartistartist",
    "recipients": [{"did": "did:plc:artistartistartistartist", "amount": 55}],
    "amount": 55,
    "currency": "USD",
    "status": "settled",
    "processor": "stripe",
    "settledAt": "2026-01-01T00:00:00.000Z",
}
SIG = {"$type": "fm.openmusic.payment.defs#inlineSignature", "key": KEY_ID, "repository": REPOSITORY}
CID = "bafyreib7ttv4kcugeqh3zhydyojdafqwsmcti65j2inhksekujyxxirhhu"
CID_HEX = "017112203f9cebc50a86240fbc9f03c3923016169305347ba9d21a75488aa2717ba2273d"
SIGNATURE_HEX = ("286cbd2cb09c4e5376487231ddb856819941cedbdd406d940403577e4c1a1f00"
                 "41caefafbce1e7213ea766e2d1287a4ef4a82ef950efab85a670b239ee522507")
SIGNATURE_B64 = "KGy9LLCcTlN2SHIx3bhWgZlBztvdQG2UBANXfkwaHwBByu+vvOHnIT6nZuLRKHpO9Kgu+VDvq4WmcLI57lIlBw"
#: The same record signed the legacy way ($sig = {"$type": "...#sigMeta", "repository", "key"}).
LEGACY_CID = "bafyreihj47cjaxtmpaftzpinwur2rlb42s3ded2qoljkpbvpqhyidnjd4u"
LEGACY_SIGNATURE_HEX = ("124b47e906437d3e5ce05558ede3cff68086b3f85cce3022a78c5fb05571199b"
                        "0d7effe82f7f0e036a1fbb0b6edb4116757a01cb20f9899f9317886d2c93c8e9")


def signer() -> attest.Signer:
    return attest.Signer(SECRET, KEY_ID)


def keys() -> dict[str, str]:
    return {KEY_ID: "did:key:" + MULTIKEY}


def legacy_record() -> dict:
    return {**RECORD, "signatures": [{"$type": attest.SIG_TYPE, "key": KEY_ID,
                                      "signature": bytes.fromhex(LEGACY_SIGNATURE_HEX)}]}


def script():
    """docs/examples/verify_record.py, loaded as a module (it imports nothing of ours)."""
    spec = importlib.util.spec_from_file_location("verify_record", ROOT / "docs" / "examples" / "verify_record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_signer_produces_the_vector():
    s = signer()
    assert s.multikey == MULTIKEY
    signed = s.sign(RECORD, REPOSITORY)
    assert signed == {**RECORD, "signatures": [{"$type": attest.SIG_TYPE, "key": KEY_ID, "cid": CID,
                                                "signature": bytes.fromhex(SIGNATURE_HEX)}]}
    assert to_json(signed)["signatures"][0]["signature"] == {"$bytes": SIGNATURE_B64}
    assert s.sign(RECORD, REPOSITORY) == signed  # RFC 6979: the same bytes every time
    validate_record(SETTLEMENT, signed)  # the lexicon takes the new `cid`
    assert attest.sig_metadata(signed["signatures"][0], REPOSITORY) == SIG
    assert attest.verified_by(signed, REPOSITORY, keys()) == (KEY_ID, attest.SCHEME)


def test_vector_from_independent_code():
    """DAG-CBOR by libipld (Rust), the hash by hashlib, the signature by OpenSSL through cryptography."""
    body = {**RECORD, "$sig": SIG}
    cid = bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(libipld.encode_dag_cbor(body)).digest()
    assert cid.hex() == CID_HEX and cbrrr.CID(cid).encode() == CID
    key = ec.derive_private_key(int(SECRET, 16), ec.SECP256K1())
    r, s = decode_dss_signature(key.sign(cid, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    s = min(s, SECP256K1_CURVE_ORDER - s)  # low-S
    assert r.to_bytes(32, "big") + s.to_bytes(32, "big") == bytes.fromhex(SIGNATURE_HEX)
    legacy = {**RECORD, "$sig": {"$type": attest.SIG_META, "repository": REPOSITORY, "key": KEY_ID}}
    legacy_cid = bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(libipld.encode_dag_cbor(legacy)).digest()
    assert cbrrr.CID(legacy_cid).encode() == LEGACY_CID
    r, s = decode_dss_signature(key.sign(legacy_cid, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    s = min(s, SECP256K1_CURVE_ORDER - s)
    assert r.to_bytes(32, "big") + s.to_bytes(32, "big") == bytes.fromhex(LEGACY_SIGNATURE_HEX)


def test_legacy_records_still_verify_and_the_forms_are_told_apart():
    old = legacy_record()
    assert attest.construction(old["signatures"][0]) == attest.LEGACY
    assert attest.verified_by(old, REPOSITORY, keys()) == (KEY_ID, attest.LEGACY)
    assert attest.attestation_cid(RECORD, old["signatures"][0], REPOSITORY) == bytes(cbrrr.CID.decode(LEGACY_CID))
    # A legacy signature dressed as a new one, or a new one stripped of its cid, verifies in neither form.
    dressed = {**old, "signatures": [{**old["signatures"][0], "cid": LEGACY_CID}]}
    assert attest.verify(dressed, REPOSITORY, keys()) is None
    new = signer().sign(RECORD, REPOSITORY)
    stripped = {**new, "signatures": [{k: v for k, v in new["signatures"][0].items() if k != "cid"}]}
    assert attest.verify(stripped, REPOSITORY, keys()) is None


@pytest.mark.parametrize("make", [attest.Signer(SECRET, KEY_ID).sign, lambda r, _repo: legacy_record()])
def test_what_does_not_verify(make):
    signed = make(RECORD, REPOSITORY)
    assert attest.verify(signed, REPOSITORY, keys()) == KEY_ID
    assert attest.verify({**signed, "amount": 56}, REPOSITORY, keys()) is None  # tampered
    assert attest.verify(signed, "did:plc:listenerlistenerlistener", keys()) is None  # copied to another repo
    assert attest.verify(signed, REPOSITORY, {KEY_ID: attest.Signer(attest.new_secret(), KEY_ID).did_key}) is None
    assert attest.verify(signed, REPOSITORY, {}) is None  # key not in the signer's document
    entry = signed["signatures"][0]
    r, s = entry["signature"][:32], int.from_bytes(entry["signature"][32:], "big")
    high_s = {**entry, "signature": r + (SECP256K1_CURVE_ORDER - s).to_bytes(32, "big")}  # malleated twin
    assert attest.verify({**signed, "signatures": [high_s]}, REPOSITORY, keys()) is None
    for bad in ({**entry, "signature": "text"}, {**entry, "key": 7}, "entry", {**entry, "signature": entry["signature"][:63]}):
        assert attest.verify({**signed, "signatures": [bad]}, REPOSITORY, keys()) is None
    # A bad entry before a good one does not hide it.
    assert attest.verify({**signed, "signatures": [high_s, entry]}, REPOSITORY, keys()) == KEY_ID


def test_a_wrong_cid_fails_even_with_a_good_signature():
    signed = signer().sign(RECORD, REPOSITORY)
    entry = {**signed["signatures"][0], "cid": LEGACY_CID}  # `cid` is not hashed, so the signature alone would pass
    assert attest.verify({**signed, "signatures": [entry]}, REPOSITORY, keys()) is None


def test_the_stranger_script_agrees_on_the_vector():
    vr = script()
    signed = from_json(json.loads(json.dumps(to_json(signer().sign(RECORD, REPOSITORY)))))
    for record, want in ((signed, CID), (legacy_record(), LEGACY_CID)):
        entry = record["signatures"][0]
        cid = vr.attestation_cid(record, entry, REPOSITORY)
        assert cbrrr.CID(cid).encode() == want
        assert vr.signature_ok("did:key:" + MULTIKEY, cid, entry["signature"])
        assert not vr.signature_ok("did:key:" + MULTIKEY, vr.attestation_cid({**record, "amount": 56}, entry, REPOSITORY),
                                   entry["signature"])
    assert vr.from_json(to_json(signed)) == signed
    assert vr.public_keys({"id": "did:web:music.example", "verificationMethod": [
        {"id": "#attestation", "type": "Multikey", "publicKeyMultibase": MULTIKEY}]}) == keys()


def test_the_guide_shows_the_vector():
    text = GUIDE.read_text()
    flat = re.sub(r"[\s`]", "", text)  # long values may be split over lines or table cells
    dag_cbor = libipld.encode_dag_cbor({**RECORD, "$sig": SIG}).hex()
    for value in (dag_cbor, SECRET, MULTIKEY, REPOSITORY, KEY_ID, CID, CID_HEX, SIGNATURE_HEX, SIGNATURE_B64, LEGACY_CID,
                  LEGACY_SIGNATURE_HEX, RECORD["tip"]["cid"], RECORD["tip"]["uri"]):
        assert value in flat, value
    # The record in the guide is this record, byte for byte once parsed.
    blocks = text.split("```json\n")[1:]
    parsed = [json.loads(b.split("```")[0]) for b in blocks]
    assert RECORD in parsed
    assert SIG in parsed
    assert base64.b64decode(SIGNATURE_B64 + "==") == bytes.fromhex(SIGNATURE_HEX)
