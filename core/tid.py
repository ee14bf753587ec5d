"""Timestamp identifiers (TIDs), the record keys atproto repos use for most collections (atproto
spec, "Record Key" / "Timestamp Identifiers"): 64 bits (the top bit 0, then 53 bits of microseconds
since the Unix epoch, then a 10-bit clock ID) written as 13 characters of base32-sortable
(``234567abcdefghijklmnopqrstuvwxyz``), so they sort like the times they hold.

A client that picks the key of a record it is about to create makes the write idempotent: sending it
again under the same key cannot create a second record."""

from __future__ import annotations

import re
import secrets
import time

ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
#: A syntactically valid TID (the first character carries the zero top bit).
TID_RE = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def tid(micros: int | None = None, clock_id: int | None = None) -> str:
    """A TID for ``micros`` (µs since the epoch; default now) and ``clock_id`` (0..1023; default
    random). Raises ``ValueError`` when either is out of range."""
    micros = time.time_ns() // 1000 if micros is None else micros
    clock_id = secrets.randbelow(1024) if clock_id is None else clock_id
    if not 0 <= micros < 2 ** 53 or not 0 <= clock_id < 1024:
        raise ValueError("micros must fit 53 bits and clock_id 10 bits")
    n = (micros << 10) | clock_id
    return "".join(ALPHABET[(n >> (5 * i)) & 31] for i in range(12, -1, -1))


def is_tid(text: object) -> bool:
    """True when ``text`` is a syntactically valid TID."""
    return isinstance(text, str) and TID_RE.match(text) is not None
