"""Managers: an artist's ``fm.openmusic.actor.profile`` names ``managers``; a manager's own profile
lists the artists it ``manages``. Only where both agree is the manager recognised: it may see the
artist's earnings, and the artist's ``payoutTo`` may route payouts to it."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from core.lexicons import PROFILE


def profile(tx: sqlite3.Connection, did: str) -> dict[str, Any]:
    """``did``'s indexed profile record ({} when none, or the account is not active)."""
    row = tx.execute("SELECT r.json FROM record r LEFT JOIN actor a ON a.did = r.did WHERE r.uri = ? "
                     "AND (a.active IS NULL OR a.active = 1)", (f"at://{did}/{PROFILE}/self",)).fetchone()
    return json.loads(row[0]) if row else {}


def manages(tx: sqlite3.Connection, manager: str, artist: str) -> bool:
    """Whether both sides agree that ``manager`` manages ``artist``."""
    return manager in (profile(tx, artist).get("managers") or []) and \
        artist in (profile(tx, manager).get("manages") or [])


def managed_artists(tx: sqlite3.Connection, manager: str) -> list[str]:
    """The artists ``manager`` claims and who name it back, sorted."""
    return sorted(a for a in profile(tx, manager).get("manages") or [] if manages(tx, manager, a))


def payee(tx: sqlite3.Connection, artist: str) -> str:
    """Whose payout account receives ``artist``'s payouts: the recognised manager named in
    ``payoutTo``, else the artist."""
    to = profile(tx, artist).get("payoutTo")
    return to if to and to != artist and manages(tx, to, artist) else artist
