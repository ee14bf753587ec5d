"""What every collection module gets: the write context and the AT-URI helpers."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from core.lexicons import RecordInvalid
from firehose.car import cid_str


@dataclass(slots=True)
class WriteContext:
    """One record write inside the indexer's open transaction.

    ``uri`` is ``at://{did}/{collection}/{rkey}``; ``cid`` is None for deletes; ``now`` is the
    indexing time (atproto datetime string).
    """

    tx: sqlite3.Connection
    did: str
    collection: str
    rkey: str
    cid: str | None
    rev: str | None
    now: str
    #: what the batch read ahead for its new plays (``streams.BatchFacts``), or None
    facts: Any = None

    @property
    def uri(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"


def split_uri(uri: str) -> tuple[str, str, str]:
    """``at://did/collection/rkey`` -> ``(did, collection, rkey)``. Raises ``RecordInvalid``."""
    if not uri.startswith("at://"):
        raise RecordInvalid("bad_reference", f"{uri!r} is not an AT-URI")
    parts = uri[len("at://"):].split("/")
    if len(parts) != 3 or not all(parts) or not parts[0].startswith("did:"):
        raise RecordInvalid("bad_reference", f"{uri!r} is not an at://did/collection/rkey URI")
    return parts[0], parts[1], parts[2]


def blob_cid(blob: object) -> str | None:
    """The CID string of a blob value (data model form), or None."""
    if isinstance(blob, dict) and blob.get("ref") is not None:
        return cid_str(blob["ref"])
    return None


def blob_mime(blob: object) -> str | None:
    """The declared mime type of a blob value, or None."""
    return blob.get("mimeType") if isinstance(blob, dict) else None


def upsert(table: str, key: str, columns: list[str], values: str | None = None) -> str:
    """``INSERT INTO table (columns) VALUES (values) ON CONFLICT (key) DO UPDATE SET`` every other
    column to the new value: what ``INSERT OR REPLACE`` did for a table whose only unique key is
    ``key``, in SQL both SQLite and PostgreSQL run (columns not named keep their values instead of
    going back to their defaults). ``values``: the VALUES list's inside (default one ``?`` per column)."""
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    inside = values if values is not None else ",".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({inside}) ON CONFLICT ({key}) DO UPDATE SET {sets}"
