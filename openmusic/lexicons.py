"""Our lexicons (``lexicons/fm/openmusic/**.json``, the public contract) and record validation.

Validation uses ``lexrpc`` (a maintained lexicon validator) with our documents plus the bundled
``com.atproto`` ones (``strongRef``, ``label.defs``). Records follow the atproto data model as
decoded by ``cbrrr``: CID links are ``cbrrr.CID``; ``to_json`` gives the JSON form.
"""

from __future__ import annotations

import base64
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import cbrrr
from lexrpc.base import Base, ValidationError, _bundled_lexicons
from multiformats import CID

#: CID types a decoded record may hold: cbrrr's (what the firehose decoder yields) or multiformats'.
CID_TYPES = (cbrrr.CID, CID)

LEXICON_DIR = Path(os.environ.get("OPENMUSIC_LEXICON_DIR") or Path(__file__).resolve().parent.parent / "lexicons")
NAMESPACE = "fm.openmusic."

TRACK = "fm.openmusic.catalog.track"
ALBUM = "fm.openmusic.catalog.album"
PROFILE = "fm.openmusic.actor.profile"
PLAY = "fm.openmusic.listen.play"
LIKE = "fm.openmusic.social.like"
TIP = "fm.openmusic.payment.tip"
SETTLEMENT = "fm.openmusic.payment.settlement"
SUBSCRIPTION = "fm.openmusic.payment.subscription"
PAYOUT = "fm.openmusic.payment.payout"


class RecordInvalid(ValueError):
    """A record failed lexicon validation. ``reason`` is a short machine key, ``str(exc)`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_documents(directory: Path = LEXICON_DIR) -> list[dict[str, Any]]:
    """All lexicon documents under ``directory``, sorted by NSID. Raises ``ValueError`` on bad JSON."""
    docs = []
    for path in sorted(directory.rglob("*.json")):
        try:
            docs.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return sorted(docs, key=lambda d: d["id"])


@lru_cache(maxsize=1)
def validator() -> Base:
    """The shared lexrpc validator over our lexicons and the bundled com.atproto ones."""
    ours = load_documents()
    ids = {d["id"] for d in ours}
    bundled = [d for d in _bundled_lexicons if d["id"].startswith("com.atproto.") and d["id"] not in ids]
    return Base(lexicons=bundled + ours, validate=True)


def record_collections() -> set[str]:
    """NSIDs of our record types."""
    return {d["id"] for d in load_documents() if d.get("defs", {}).get("main", {}).get("type") == "record"}


def validate_record(collection: str, record: Any) -> None:
    """Validate ``record`` (dag_cbor data model) as a ``collection`` record.

    Raises ``RecordInvalid`` (reason ``not_object``, ``wrong_type`` or ``lexicon``). Unknown extra
    fields are allowed (lexicon spec: at worst warnings); the whole record is rejected on any error.
    """
    if not isinstance(record, dict):
        raise RecordInvalid("not_object", "record is not a map")
    if record.get("$type") != collection:
        raise RecordInvalid("wrong_type", f"$type {record.get('$type')!r} does not match collection {collection}")
    try:
        validator().validate(collection, "record", record)
    except ValidationError as exc:
        raise RecordInvalid("lexicon", str(exc)) from exc
    except (TypeError, KeyError, AttributeError) as exc:  # defensive: odd shapes inside the validator
        raise RecordInvalid("lexicon", f"{type(exc).__name__}: {exc}") from exc
    _check_blobs(collection, record)


def _check_blobs(collection: str, record: dict[str, Any]) -> None:
    """Blob fields must be typed blobs with a CID ref, and match the lexicon's ``accept`` list
    (lexrpc checks only that a blob is an object)."""
    props = validator().defs[collection]["record"]["properties"]
    for name, schema in props.items():
        if schema.get("type") != "blob" or name not in record:
            continue
        blob = record[name]
        if not isinstance(blob, dict) or blob.get("$type") != "blob" or not isinstance(blob.get("ref"), CID_TYPES):
            raise RecordInvalid("lexicon", f"{name} is not a blob with a CID ref")
        mime = blob.get("mimeType")
        if not isinstance(mime, str) or not isinstance(blob.get("size"), int):
            raise RecordInvalid("lexicon", f"{name} blob lacks mimeType or size")
        accept = schema.get("accept")
        if accept and not any(mime == a or (a.endswith("/*") and mime.startswith(a[:-1])) for a in accept):
            raise RecordInvalid("lexicon", f"{name} mimeType {mime!r} is not one of {accept}")
        if (max_size := schema.get("maxSize")) and blob["size"] > max_size:
            raise RecordInvalid("lexicon", f"{name} size {blob['size']} is over maxSize {max_size}")


def to_json(value: Any) -> Any:
    """atproto data model -> JSON form (CID -> ``{"$link": str}``, bytes -> ``{"$bytes": b64}``)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, CID_TYPES):
        return {"$link": value.encode("base32")}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode().rstrip("=")}
    return value


def from_json(value: Any) -> Any:
    """JSON form -> atproto data model (inverse of ``to_json``)."""
    if isinstance(value, dict):
        if set(value) == {"$link"} and isinstance(value["$link"], str):
            return cbrrr.CID.decode(value["$link"])
        if set(value) == {"$bytes"} and isinstance(value["$bytes"], str):
            b64 = value["$bytes"]
            return base64.b64decode(b64 + "=" * (-len(b64) % 4))
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value
