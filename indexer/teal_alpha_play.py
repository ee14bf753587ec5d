"""``fm.teal.alpha.feed.play`` (teal.fm's legacy namespace, still written by piper) -> table
``teal_play``, exactly as ``indexer.teal_play`` does for ``fm.teal.feed.play``: validated against
the vendored alpha lexicon (``lexicons/fm/teal/alpha/feed/play.json``), kept under its own AT-URI
and collection (not rewritten to the stable one), and kept once when the same play is also
written in the stable namespace."""

from __future__ import annotations

from typing import Any

from indexer.base import WriteContext
from indexer.teal_play import ALPHA_COLLECTION, check_play, delete_play, insert_play

COLLECTION = ALPHA_COLLECTION
#: Not one of our lexicons (``indexer.core.check_foreign``, then ``check``).
LEXICON = False


def check(record: dict[str, Any]) -> None:
    """Validate against the vendored ``fm.teal.alpha.feed.play`` lexicon (bare-UUID MBIDs
    accepted, ``indexer.teal_play.check_play``). Raises ``RecordInvalid``."""
    check_play(COLLECTION, record)


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one legacy teal play (``indexer.teal_play.insert_play``)."""
    insert_play(ctx, record)


def delete(ctx: WriteContext) -> None:
    """Remove one legacy teal play (``indexer.teal_play.delete_play``)."""
    delete_play(ctx)
