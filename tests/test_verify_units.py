"""Units of commit verification: TID time, signatures (k256 via coincurve, p256 via atproto_crypto), low-S."""

import hashlib
import time

import coincurve
from atproto_crypto.consts import SECP256K1_CURVE_ORDER
from atproto_crypto.did import format_did_key
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from firehose.events import CommitEvent
from firehose.verify import TID_ALPHABET, VerifyError, check_signature, tid_timestamp_s, verify_commit


def make_tid(seconds: float) -> str:
    value = int(seconds * 1_000_000) << 10
    return "".join(TID_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(13)))


def test_tid_timestamp():
    assert abs(tid_timestamp_s(make_tid(1_700_000_000.5)) - 1_700_000_000.5) < 1e-6
    assert abs(tid_timestamp_s("3n2taiw3uus2t") - time.time()) < 10 * 365 * 86400  # a real rev from the PDS


def k256():
    key = coincurve.PrivateKey()
    return key, format_did_key("ES256K", key.public_key.format(compressed=True))


def compact(der: bytes) -> bytes:
    return coincurve.ecdsa.serialize_compact(coincurve.ecdsa.der_to_cdata(der))


def test_k256_signatures_and_malleability():
    key, did_key = k256()
    msg = b"commit bytes"
    sig = compact(key.sign(msg))
    assert check_signature(did_key, msg, sig)
    assert not check_signature(did_key, msg + b"!", sig)
    assert not check_signature(k256()[1], msg, sig)
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    high_s = r + (SECP256K1_CURVE_ORDER - s).to_bytes(32, "big")  # the same signature, malleated
    assert not check_signature(did_key, msg, high_s)
    assert not check_signature(did_key, msg, sig[:63])


def test_p256_signatures():
    key = ec.generate_private_key(ec.SECP256R1())
    did_key = format_did_key("ES256", key.public_key().public_bytes(serialization.Encoding.X962,
                                                                    serialization.PublicFormat.CompressedPoint))
    msg = b"commit bytes"
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    s = min(s, order - s)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert check_signature(did_key, msg, sig)
    assert not check_signature(did_key, msg, r.to_bytes(32, "big") + (order - s).to_bytes(32, "big"))
    assert not check_signature(did_key, hashlib.sha256(msg).digest(), sig)


def test_future_rev_and_missing_car_are_rejected():
    evt = CommitEvent(seq=1, did="did:plc:x", rev=make_tid(time.time() + 3600), since=None, commit="", time="",
                      blocks={}, root=b"x")
    for event, reason in ((evt, "future_rev"),
                          (CommitEvent(1, "did:plc:x", make_tid(time.time()), None, "", ""), "bad_car")):
        try:
            verify_commit(event, k256()[1])
        except VerifyError as exc:
            assert exc.reason == reason
        else:
            raise AssertionError("not rejected")
