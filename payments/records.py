"""The broker's own signed records besides settlements (``fm.openmusic.payment.subscription`` and
``payment.payout``): record keys, signing, and the ``broker_outbox`` that ``BrokerWorker``
publishes to the broker's repo with ``putRecord`` (a retry rewrites the same record)."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from typing import Any

from core.lexicons import to_json, validate_record


def record_key(text: str) -> str:
    """A record key derived from ``text``: lower-case base32 of its sha-256, 26 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode().lower()[:26]


def queue_signed(tx: sqlite3.Connection, broker: Any, collection: str, rkey: str, record: dict[str, Any],
                 now: str) -> str:
    """Sign ``record`` (CID-first, ``payments.attest``), check it against our lexicon and queue it
    for publication at ``collection``/``rkey`` (replacing an unpublished or older version). Returns
    the signed JSON. Raises ``RecordInvalid`` if the record does not pass the lexicon."""
    signed = broker.signer.sign(record, broker.did)
    validate_record(collection, signed)
    text = json.dumps(to_json(signed), separators=(",", ":"))
    tx.execute("INSERT INTO broker_outbox (collection, rkey, record, updated_at) VALUES (?,?,?,?) "
               "ON CONFLICT (collection, rkey) DO UPDATE SET record = excluded.record, published_cid = NULL, "
               "published_at = NULL, attempts = 0, last_error = NULL, updated_at = excluded.updated_at",
               (collection, rkey, text, now))
    return text
