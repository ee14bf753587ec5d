"""``app.bsky.feed.post`` records that share an Open Music page -> table ``share`` (issue 13, the feed generator)."""

from __future__ import annotations

from typing import Any

from core.lexicons import RecordInvalid
from indexer.base import WriteContext

COLLECTION = "app.bsky.feed.post"


def check(record: dict[str, Any]) -> None:
    """Not indexed yet. Raises ``RecordInvalid``."""
    raise RecordInvalid("not_indexed", f"{COLLECTION} is not indexed yet")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Not indexed yet."""


def delete(ctx: WriteContext) -> None:
    """Not indexed yet."""
