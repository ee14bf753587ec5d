"""Our lexicons (``lexicons/fm/openmusic/**.json``, the public contract) and record validation.

Validation uses ``lexrpc`` (a maintained lexicon validator) with our documents plus the bundled
``com.atproto`` ones (``strongRef``, ``label.defs``). Records follow the atproto data model as
decoded by ``cbrrr``: CID links are ``cbrrr.CID``; ``to_json`` gives the JSON form.

Records come from anyone. Before any recursive work on one (lexicon validation, ``to_json``,
``json.dumps``), ``check_data_model`` walks it without recursion and refuses what the atproto data
model does not allow (floats, integers outside int64, non-string map keys, other types) and what
is bigger than any record of ours needs to be (``MAX_DEPTH``, ``MAX_VALUES``, ``MAX_RECORD_BYTES``).
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
VOTE = "fm.openmusic.social.vote"
REVIEW = "fm.openmusic.social.review"
FOLLOW = "fm.openmusic.graph.follow"
PLAYLIST = "fm.openmusic.catalog.playlist"
PLAYLIST_ITEM = "fm.openmusic.catalog.playlistItem"
TIP = "fm.openmusic.payment.tip"
SETTLEMENT = "fm.openmusic.payment.settlement"
SUBSCRIPTION = "fm.openmusic.payment.subscription"
PAYOUT = "fm.openmusic.payment.payout"
#: plyr.fm's track record (``indexer.plyr_track``): indexed into our catalog under its own AT-URI.
PLYR_TRACK = "fm.plyr.track"
#: The collections whose records are tracks of our catalog: plays, likes, votes, tips, playlist
#: items and pages accept a track of either.
TRACK_COLLECTIONS = frozenset({TRACK, PLYR_TRACK})

#: Deepest nesting of maps and arrays in a record (the record itself is level 1). Ours need about 6;
#: unknown fields from other apps get room, and every recursive step after the check stays far
#: below Python's recursion limit (1000).
MAX_DEPTH = 32
#: Most values (maps, arrays, scalars) in one record. Our largest legitimate records (an album of
#: 500 tracks, a play of 1000 segments) hold about 3,500.
MAX_VALUES = 20_000
#: Largest record block, bytes (DAG-CBOR), and largest estimate of a decoded record's encoding. An
#: album of 500 tracks with its longest description is about 130 KiB; the reference PDS takes
#: records of up to about 1 MB.
MAX_RECORD_BYTES = 256 * 1024
#: The atproto data model's integers: signed 64-bit.
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def is_track_uri(uri: object) -> bool:
    """Whether ``uri`` is the AT-URI of a record of one of ``TRACK_COLLECTIONS``
    (``at://did/<collection>/rkey``)."""
    if not isinstance(uri, str) or not uri.startswith("at://"):
        return False
    parts = uri[len("at://"):].split("/")
    return len(parts) == 3 and parts[1] in TRACK_COLLECTIONS


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

    Raises ``RecordInvalid`` (reason ``not_object``, ``wrong_type``, ``lexicon``, or one of
    ``check_data_model``'s). Unknown extra fields are allowed (lexicon spec: at worst warnings) if
    they are data model values; the whole record is rejected on any error.
    """
    if not isinstance(record, dict):
        raise RecordInvalid("not_object", "record is not a map")
    check_data_model(record)
    if record.get("$type") != collection:
        raise RecordInvalid("wrong_type", f"$type {record.get('$type')!r} does not match collection {collection}")
    try:
        validator().validate(collection, "record", record)
    except ValidationError as exc:
        raise RecordInvalid("lexicon", str(exc)) from exc
    except (TypeError, KeyError, AttributeError) as exc:  # defensive: odd shapes inside the validator
        raise RecordInvalid("lexicon", f"{type(exc).__name__}: {exc}") from exc
    _check_blobs(collection, record)


def check_data_model(record: Any, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES,
                     max_bytes: int = MAX_RECORD_BYTES) -> None:
    """Check that ``record`` holds only atproto data model values, within bounds, without recursion.

    Raises ``RecordInvalid`` with reason ``too_deep`` (maps/arrays nested over ``max_depth``),
    ``too_large`` (over ``max_values`` values, or an encoding estimated over ``max_bytes``) or
    ``data_model`` (a float, an integer outside int64, a non-string map key, any other type). The
    walk stops at the first problem, so its cost is bounded by ``max_values`` whatever the input.
    """
    stack: list[tuple[Any, int, str]] = [(record, 1, "$")]
    values = size = 0
    while stack:
        value, depth, path = stack.pop()
        values += 1
        if values > max_values:
            raise RecordInvalid("too_large", f"record holds more than {max_values} values")
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise RecordInvalid("too_deep", f"record nests maps/arrays deeper than {max_depth} levels (at {path})")
            if values + len(stack) + len(value) > max_values:
                raise RecordInvalid("too_large", f"record holds more than {max_values} values")
            size += 9
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise RecordInvalid("data_model", f"map key {type(key).__name__} at {path} is not a string")
                    size += len(key) + 9
                    stack.append((item, depth + 1, f"{path}.{key[:64]}" if len(path) < 256 else path))
            else:
                stack.extend((item, depth + 1, f"{path}[{i}]" if len(path) < 256 else path)
                             for i, item in enumerate(value))
        elif isinstance(value, str):
            size += len(value) + 9  # characters: a lower bound of its UTF-8 bytes
        elif isinstance(value, bytes):
            size += len(value) + 9
        elif isinstance(value, bool) or value is None:
            size += 1
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise RecordInvalid("data_model", f"integer at {path} is outside the 64-bit range")
            size += 9
        elif isinstance(value, CID_TYPES):
            size += 41
        elif isinstance(value, float):
            raise RecordInvalid("data_model", f"float at {path}: the atproto data model has no floats")
        else:
            raise RecordInvalid("data_model", f"{type(value).__name__} at {path} is not a data model value")
        if size > max_bytes:
            raise RecordInvalid("too_large", f"record is larger than {max_bytes} bytes")


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


def to_json(value: Any, _depth: int = 0) -> Any:
    """atproto data model -> JSON form (CID -> ``{"$link": str}``, bytes -> ``{"$bytes": b64}``).

    Recursive: give it records that passed ``check_data_model`` (``validate_record`` does). Raises
    ``RecordInvalid`` (``too_deep``) past ``MAX_DEPTH`` levels rather than exhausting the stack.
    """
    if isinstance(value, dict | list):
        if _depth >= MAX_DEPTH:
            raise RecordInvalid("too_deep", f"value nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            return {k: to_json(v, _depth + 1) for k, v in value.items()}
        return [to_json(v, _depth + 1) for v in value]
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
