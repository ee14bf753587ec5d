"""``fm.openmusic.catalog.playlistItem`` -> table ``playlist_item`` (issue 13)."""

from __future__ import annotations

from typing import Any

from core.lexicons import PLAYLIST_ITEM, RecordInvalid
from indexer.base import WriteContext

COLLECTION = PLAYLIST_ITEM


def check(record: dict[str, Any]) -> None:
    """Not indexed yet. Raises ``RecordInvalid``."""
    raise RecordInvalid("not_indexed", f"{COLLECTION} is not indexed yet")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Not indexed yet."""


def delete(ctx: WriteContext) -> None:
    """Not indexed yet."""
