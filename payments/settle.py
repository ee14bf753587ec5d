"""Tip settlement: the broker's rules for one indexed ``fm.openmusic.payment.tip`` and the ledger
transaction and signed ``fm.openmusic.payment.settlement`` record that come of it.

``settle_tip`` runs inside one writer transaction: the decision, the ledger entries (idempotency key
``tip:<tip AT-URI>``) and the outbox row in ``broker_settlement`` are written together, so a crash
leaves either all or none of them; the outbox is published to the broker's repo afterwards
(``payments.broker``). A decided tip is never decided again: deleting or editing the tip record
changes no money.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from core.lexicons import SETTLEMENT, from_json, to_json, validate_record
from payments import ledger
from payments.attest import Signer
from payments.records import record_key
from payments.shares import allocate

SETTLED, REJECTED, REFUNDED = "settled", "rejected", "refunded"


@dataclass(frozen=True)
class Policy:
    """Tip limits, in minor units of ``currency`` (ISO 4217, upper case)."""

    currency: str = "USD"
    min_artist: int = 100   # $1.00 for a tip to an artist
    min_track: int = 10     # $0.10 for a tip to a song
    max_tip: int = 50_000
    daily_cap: int = 100_000  # per payer, per UTC day, of settled tips


@dataclass(frozen=True)
class Broker:
    """The broker's identity: ``did`` of its repo (where settlements are written), its attestation
    ``signer`` and the secret ``salt`` for processor reference hashes."""

    did: str
    signer: Signer
    salt: str

    def ref_hash(self, reference: str) -> str:
        """hex sha-256 of salt and a processor reference (a Stripe customer ID): publishable."""
        return hashlib.sha256(f"{self.salt}:{reference}".encode()).hexdigest()


def settlement_rkey(tip_uri: str) -> str:
    """The settlement's record key, derived from the tip's AT-URI: lower-case base32 of its sha-256,
    26 characters. The same tip always maps to the same record, so retries overwrite, never add."""
    return record_key(tip_uri)


def split_amount(amount: int, splits: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Share ``amount`` (minor units) by ``splits`` [(did, basis points)] summing to 10000: each gets
    the floor of its share, and the cents left over go one each to the largest remainders (ties in
    list order). The parts always sum to ``amount`` (``payments.shares.allocate``)."""
    return allocate(amount, splits)


def _recipients(tx: sqlite3.Connection, tip: sqlite3.Row | tuple, track_uri: str | None) -> tuple[str | None, list]:
    subject = tip["subject"]
    # an artist taken down by a labeler (actor.hidden 2, indexer.labels) gets no new tips, like one not active
    known = tx.execute("SELECT 1 FROM track t JOIN actor a ON a.did = t.did WHERE t.did = ? AND a.active = 1 "
                       "AND a.hidden < 2 LIMIT 1", (subject,)).fetchone()
    if not known:
        return "unknown_artist", []
    if not track_uri:
        return None, [(subject, tip["amount"])]
    row = tx.execute("SELECT r.json FROM track t JOIN record r ON r.uri = t.uri WHERE t.uri = ? AND t.did = ? "
                     "AND t.hidden < 2", (track_uri, subject)).fetchone()
    if not row:
        return "unknown_track", []
    splits = json.loads(row[0]).get("splits") or [{"did": subject, "shareBps": 10000}]
    return None, split_amount(tip["amount"], [(s["did"], s["shareBps"]) for s in splits])


def decide(tx: sqlite3.Connection, tip: sqlite3.Row, policy: Policy, today: str) -> tuple[str, str | None, list]:
    """(status, reason, [(did, amount)]) for one tip row; ``today`` is the UTC date (YYYY-MM-DD)."""
    amount, currency = tip["amount"], tip["currency"].upper()
    if currency != policy.currency:
        return REJECTED, "unsupported_currency", []
    if tip["did"] == tip["subject"]:  # it would turn bought credit into earnings that are paid out
        return REJECTED, "self_tip", []
    reason, recipients = _recipients(tx, tip, tip["track_uri"])
    if reason:
        return REJECTED, reason, []
    if amount < (policy.min_track if tip["track_uri"] else policy.min_artist):
        return REJECTED, "below_minimum", []
    if amount > policy.max_tip:
        return REJECTED, "over_tip_cap", []
    (spent_today,) = tx.execute(
        "SELECT COALESCE(SUM(amount), 0) FROM broker_settlement WHERE payer = ? AND status = ? AND settled_at >= ?",
        (tip["did"], SETTLED, today)).fetchone()
    if spent_today + amount > policy.daily_cap:
        return REJECTED, "over_daily_cap", []
    if ledger.balance(tx, ledger.credit(tip["did"]), currency) < amount:
        return REJECTED, "insufficient_credit", []
    return SETTLED, None, recipients


def _record(tip: Any, status: str, reason: str | None, recipients: list, ref_hash: str | None,
            settled_at: str, updated_at: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"$type": SETTLEMENT, "tip": {"uri": tip["uri"], "cid": tip["cid"]}, "payer": tip["did"],
                           "subject": tip["subject"]}
    if tip["track_uri"]:
        rec["track"] = {"uri": tip["track_uri"], "cid": tip["track_cid"]}
    rec |= {"recipients": [{"did": d, "amount": a} for d, a in recipients], "amount": tip["amount"],
            "currency": tip["currency"].upper(), "status": status}
    if reason:
        rec["reason"] = reason
    rec["processor"] = "stripe"
    if ref_hash:
        rec["processorRefHash"] = ref_hash
    rec["settledAt"] = settled_at
    if updated_at:
        rec["updatedAt"] = updated_at
    return rec


def _signed_json(broker: Broker, rec: dict[str, Any]) -> str:
    signed = broker.signer.sign(rec, broker.did)
    validate_record(SETTLEMENT, signed)  # what we publish must pass our own lexicon
    return json.dumps(to_json(signed), separators=(",", ":"))


def settle_tip(tx: sqlite3.Connection, tip_uri: str, policy: Policy, broker: Broker, now: str) -> str | None:
    """Decide one indexed tip (inside the caller's transaction): post the ledger transaction when it
    settles and queue the signed settlement record. Returns the status, or None when the tip is
    gone or was decided before."""
    cur = tx.cursor()
    cur.row_factory = sqlite3.Row
    tip = cur.execute("SELECT * FROM tip WHERE uri = ?", (tip_uri,)).fetchone()
    if tip is None or tx.execute("SELECT 1 FROM broker_settlement WHERE tip_uri = ?", (tip_uri,)).fetchone():
        return None
    status, reason, recipients = decide(tx, tip, policy, now[:10])
    currency = tip["currency"].upper()
    if status == SETTLED:
        ledger.post(tx, f"tip:{tip_uri}", "tip", currency,
                    [(ledger.credit(tip["did"]), -tip["amount"])] + [(ledger.earnings(d), a) for d, a in recipients],
                    ref=tip_uri)
        _earning_lines(tx, f"tip:{tip_uri}", "tip", now, tip, recipients, currency)
    customer = tx.execute("SELECT customer FROM stripe_customer WHERE did = ?", (tip["did"],)).fetchone()
    ref_hash = broker.ref_hash(customer[0]) if customer else None
    tx.execute("INSERT INTO broker_settlement (tip_uri, tip_cid, rkey, payer, status, reason, amount, currency, record, "
               "settled_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (tip_uri, tip["cid"], settlement_rkey(tip_uri), tip["did"], status, reason, tip["amount"], currency,
                _signed_json(broker, _record(tip, status, reason, recipients, ref_hash, now)), now))
    return status


def refund_tip(tx: sqlite3.Connection, tip_uri: str, broker: Broker, now: str) -> bool:
    """Refund a settled tip: reverse its ledger transaction (recipients' earnings back to the payer's
    credit) and queue the settlement record again with status ``refunded``. Returns False when the tip
    was not settled (rejected, unknown, or refunded already)."""
    row = tx.execute("SELECT record FROM broker_settlement WHERE tip_uri = ? AND status = ?", (tip_uri, SETTLED)).fetchone()
    if not row:
        return False
    ledger.reverse(tx, f"tip:{tip_uri}", f"tip-refund:{tip_uri}", "tip_refund", ref=tip_uri)
    tx.execute("INSERT INTO earning_line (txn, period, kind, artist, track_uri, share_bps, amount, currency, source) "
               "SELECT ?, ?, 'refund', artist, track_uri, share_bps, -amount, currency, source FROM earning_line "
               "WHERE txn = ?", (f"tip-refund:{tip_uri}", now[:7], f"tip:{tip_uri}"))
    rec = from_json(json.loads(row[0]))
    rec.pop("signatures", None)
    rec |= {"status": REFUNDED, "reason": "refund", "updatedAt": now}
    tx.execute("UPDATE broker_settlement SET status = ?, reason = 'refund', record = ?, published_cid = NULL, "
               "attempts = 0 WHERE tip_uri = ?", (REFUNDED, _signed_json(broker, rec), tip_uri))
    return True


def _earning_lines(tx: sqlite3.Connection, txn: str, kind: str, now: str, tip: Any, recipients: list,
                   currency: str) -> None:
    """Explain a settled tip in ``earning_line`` (``payment.getEarnings``): one line per recipient."""
    tx.executemany(
        "INSERT INTO earning_line (txn, period, kind, artist, track_uri, pool, amount, currency, source) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        [(txn, now[:7], kind, did, tip["track_uri"], tip["amount"], amount, currency, tip["uri"])
         for did, amount in recipients])


def pending_tips(tx: sqlite3.Connection, limit: int = 100) -> list[str]:
    """Indexed tips of active accounts that the broker has not decided yet, oldest first."""
    return [r[0] for r in tx.execute(
        "SELECT t.uri FROM tip t JOIN actor a ON a.did = t.did AND a.active = 1 "
        "WHERE NOT EXISTS (SELECT 1 FROM broker_settlement b WHERE b.tip_uri = t.uri) ORDER BY t.indexed_at, t.uri LIMIT ?",
        (limit,))]
