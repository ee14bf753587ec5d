"""CAR v1 reading for repo slices (atproto repository spec, "CAR File Serialization").

We read sections ourselves rather than through ``libipld.decode_car`` because we need each block's
raw bytes: to check the block against its CID (sha2-256) and to decode records with ``cbrrr``,
which keeps CID links and bytes apart (libipld decodes both to ``bytes``). Varints are read here
directly: the ``multiformats`` package validates types at run time and costs ~1 ms a call.
"""

from __future__ import annotations

import hashlib

import cbrrr
import libipld
from multiformats import CID

_SHA2_256 = 0x12


class CarError(ValueError):
    """The CAR bytes are malformed, or a block does not match its CID."""


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 varint at ``pos`` -> (value, next position). Raises ``CarError``."""
    value = shift = 0
    for i in range(pos, min(pos + 9, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > pos:
                raise CarError(f"non-minimal varint at offset {pos}")
            return value, i + 1
        shift += 7
    raise CarError(f"bad varint at offset {pos}")


def _read_cid(buf: memoryview, pos: int) -> tuple[bytes, int]:
    start = pos
    version, pos = _read_varint(buf, pos)
    if version != 1:
        raise CarError(f"unsupported CID version {version} at offset {start}")
    _codec, pos = _read_varint(buf, pos)
    _hash_code, pos = _read_varint(buf, pos)
    digest_len, pos = _read_varint(buf, pos)
    pos += digest_len
    if pos > len(buf):
        raise CarError("truncated CID")
    return bytes(buf[start:pos]), pos


def read_car(data: bytes, verify: bool = True) -> tuple[list[bytes], dict[bytes, bytes]]:
    """Parse a CAR v1 file.

    Returns ``(roots, blocks)``: root CIDs as binary CIDs, and ``{binary CID: raw block bytes}``.
    Duplicate blocks and any block order are accepted (sync spec). With ``verify``, each block's
    sha2-256 digest must match its CID. Raises ``CarError``.
    """
    buf = memoryview(data)
    header_len, pos = _read_varint(buf, 0)
    try:
        header = cbrrr.decode_dag_cbor(bytes(buf[pos:pos + header_len]))
    except Exception as exc:
        raise CarError("bad CAR header") from exc
    if not isinstance(header, dict) or header.get("version") != 1:
        raise CarError("not a CAR v1 header")
    roots_field = header.get("roots") or []
    if not isinstance(roots_field, list) or not all(isinstance(r, cbrrr.CID) for r in roots_field):
        raise CarError("the CAR header's roots are not CID links")  # bytes(int) would allocate that many bytes
    roots = [bytes(r) for r in roots_field]
    pos += header_len
    blocks: dict[bytes, bytes] = {}
    end = len(buf)
    while pos < end:
        section_len, pos = _read_varint(buf, pos)
        section_end = pos + section_len
        if section_end > end:
            raise CarError("truncated CAR section")
        cid, block_start = _read_cid(buf, pos)
        block = bytes(buf[block_start:section_end])
        if verify:
            verify_block(cid, block)
        blocks[cid] = block
        pos = section_end
    return roots, blocks


def verify_block(cid: bytes, block: bytes) -> None:
    """Raise ``CarError`` unless ``block`` hashes (sha2-256) to the digest in binary ``cid``."""
    # binary CIDv1: 0x01, codec varint, 0x12 (sha2-256), 0x20 (32), digest
    if len(cid) < 36 or cid[-34] != _SHA2_256 or cid[-33] != 32:
        raise CarError(f"unsupported CID hash in {cid_str(cid)}")
    if hashlib.sha256(block).digest() != cid[-32:]:
        raise CarError(f"block does not match its CID {cid_str(cid)}")


def cid_str(cid: bytes | cbrrr.CID | CID) -> str:
    """A CID (binary, ``cbrrr.CID`` or ``multiformats.CID``) -> the base32 string atproto uses (``bafy...``)."""
    if isinstance(cid, bytes):
        return libipld.encode_cid(cid)  # Rust: ~15x faster than base64.b32encode
    if isinstance(cid, cbrrr.CID):
        return libipld.encode_cid(bytes(cid))
    return cid.encode("base32")
