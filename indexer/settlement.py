"""``fm.openmusic.payment.settlement`` (in a payment broker's repo) -> table ``settlement``.

Only records from the repos in ``TRUSTED_BROKERS`` are indexed (attested.network's "federated"
trust: anyone can write a record claiming a tip settled). Each is stored unverified
(``verified`` NULL); ``payments.broker.SettlementVerifier`` then checks its inline signature against
the signer's DID document and that it matches the tip it points at, outside the indexer's
transaction (that needs network fetches)."""

from __future__ import annotations

import json
from typing import Any

from core.db import normalize_datetime
from core.lexicons import SETTLEMENT, TIP, RecordInvalid
from indexer.base import WriteContext, split_uri

COLLECTION = SETTLEMENT
#: Broker repo DIDs whose settlement records we index (``Settings.trusted_brokers``, set at start).
TRUSTED_BROKERS: set[str] = set()


def check(record: dict[str, Any]) -> None:
    """The tip reference must be a tip by the payer. Raises ``RecordInvalid``."""
    did, collection, _ = split_uri(record["tip"]["uri"])
    if collection != TIP or did != record["payer"]:
        raise RecordInvalid("bad_reference", f"settlement tip {record['tip']['uri']} is not a tip by {record['payer']}")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one settlement record from a trusted broker (unverified until the verifier runs)."""
    if ctx.did not in TRUSTED_BROKERS:
        raise RecordInvalid("untrusted_broker", f"{ctx.did} is not a trusted payment broker")
    recipients = [{"did": r["did"], "amount": r["amount"]} for r in record["recipients"]]
    ctx.tx.execute(
        "INSERT INTO settlement (uri, did, rkey, cid, tip_uri, tip_cid, payer, subject, status, reason, amount, currency, "
        "recipients, settled_at, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, record["tip"]["uri"], record["tip"]["cid"], record["payer"],
         record["subject"], record["status"], record.get("reason"), record["amount"], record["currency"],
         json.dumps(recipients), normalize_datetime(record["settledAt"]) or ctx.now, ctx.now))


def delete(ctx: WriteContext) -> None:
    """Remove a settlement record from the index."""
    ctx.tx.execute("DELETE FROM settlement WHERE uri = ?", (ctx.uri,))
