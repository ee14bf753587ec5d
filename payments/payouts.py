"""Payouts: artists' earnings leave through Stripe Connect transfers, each attested by a signed
``fm.openmusic.payment.payout`` record in the broker's repo.

A run (``openmusic payouts run``, safe to schedule and to repeat):

1. ``open_payouts`` (one writer transaction): for each artist whose earnings balance reaches the
   threshold, whose payee (the artist, or a manager both sides agree on, ``payments.managers``)
   has a Connect account that can receive payouts, and who has no payout in flight: a ``payout``
   row (``pending``) with a deterministic ID, the ledger reservation ``payout:<id>``
   (``earnings:<did>`` -> ``payouts:pending``) and a ``payout`` earning line.
2. ``Payments.send_payouts``: for each pending payout, the transfer already made for it
   (``transfer_group`` = the payout ID) or a new one with the payout ID as idempotency key; then
   ``complete_payout`` (one transaction): ledger ``payout-sent:<id>`` (``payouts:pending`` ->
   ``stripe:holding``), status ``paid`` and the signed record queued for the broker's repo.

A crash between the transfer and step 2's transaction leaves the payout pending; the next run
finds the transfer by its group and completes it, so nothing is paid twice. A transfer Stripe
refuses outright cancels the payout (``payout-cancel:<id>`` returns the money to earnings).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from core.lexicons import PAYOUT
from payments import ledger, managers
from payments.earnings import SOURCES
from payments.records import queue_signed, record_key

PENDING = "payouts:pending"


def payout_uri(broker_did: str, payout_id: str) -> str:
    """The AT-URI of a payout's record in the broker's repo."""
    return f"at://{broker_did}/{PAYOUT}/{record_key(payout_id)}"


def _covers(tx: sqlite3.Connection, did: str, currency: str, after_line: int) -> tuple[dict[str, Any], int]:
    """What a payout of ``did`` covers: earning lines after ``after_line`` by source, the periods,
    and the last line's id."""
    covers: dict[str, Any] = {"subscriptions": 0, "ads": 0, "tips": 0}
    periods: set[str] = set()
    last = after_line
    for line_id, kind, per, amount in tx.execute(
            "SELECT id, kind, period, amount FROM earning_line WHERE artist = ? AND currency = ? AND id > ? "
            "AND kind != 'payout' ORDER BY id", (did, currency, after_line)):
        covers[SOURCES.get(kind, "tips")] += amount
        periods.add(per)
        last = line_id
    covers["periods"] = sorted(periods)
    return covers, last


def open_payouts(tx: sqlite3.Connection, threshold: int, currency: str, broker_did: str, now: str) -> list[str]:
    """Step 1 (see the module docstring). Returns the new payout IDs."""
    opened = []
    rows = tx.execute("SELECT substr(account, 10), SUM(amount) FROM ledger_entry WHERE account LIKE 'earnings:%' "
                      "AND currency = ? GROUP BY account HAVING SUM(amount) >= ? ORDER BY account",
                      (currency, max(1, threshold))).fetchall()
    for did, balance in rows:
        if tx.execute("SELECT 1 FROM payout WHERE did = ? AND status = 'pending'", (did,)).fetchone():
            continue
        payee = managers.payee(tx, did)
        acct = tx.execute("SELECT account FROM payout_account WHERE did = ? AND payouts_enabled = 1",
                          (payee,)).fetchone()
        if not acct:
            continue
        (seq,) = tx.execute("SELECT COUNT(*) FROM payout WHERE did = ?", (did,)).fetchone()
        payout_id = "po_" + record_key(f"{did}:{seq}")[:24]
        prev = tx.execute("SELECT covers FROM payout WHERE did = ? AND status = 'paid' ORDER BY created_at DESC "
                          "LIMIT 1", (did,)).fetchone()
        covers, last_line = _covers(tx, did, currency, json.loads(prev[0])["lastLine"] if prev else 0)
        ledger.post(tx, f"payout:{payout_id}", "payout_reserve", currency,
                    [(ledger.earnings(did), -balance), (PENDING, balance)], ref=payout_id)
        tx.execute("INSERT INTO earning_line (txn, period, kind, artist, amount, currency, source) "
                   "VALUES (?,?,?,?,?,?,?)", (f"payout:{payout_id}", now[:7], "payout", did, -balance, currency,
                                              payout_uri(broker_did, payout_id)))
        period = max(covers["periods"]) if covers["periods"] else now[:7]
        tx.execute("INSERT INTO payout (id, did, payee, account, period, amount, currency, covers, status, rkey, "
                   "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   (payout_id, did, payee, acct[0], period, balance, currency,
                    json.dumps({**covers, "lastLine": last_line}), "pending", record_key(payout_id), now, now))
        opened.append(payout_id)
    return opened


def complete_payout(tx: sqlite3.Connection, payout_id: str, transfer_id: str, broker: Any, now: str) -> bool:
    """Step 2's transaction: book the transfer and queue the signed record. False when the payout is
    not pending (completed already)."""
    cur = tx.cursor()
    cur.row_factory = sqlite3.Row
    row = cur.execute("SELECT * FROM payout WHERE id = ? AND status = 'pending'", (payout_id,)).fetchone()
    if row is None:
        return False
    ledger.post(tx, f"payout-sent:{payout_id}", "payout", row["currency"],
                [(PENDING, -row["amount"]), (ledger.HOLDING, row["amount"])], ref=transfer_id)
    tx.execute("UPDATE payout SET status = 'paid', transfer = ?, last_error = NULL, updated_at = ? WHERE id = ?",
               (transfer_id, now, payout_id))
    covers = json.loads(row["covers"])
    rec: dict[str, Any] = {"$type": PAYOUT, "recipient": row["did"], "amount": row["amount"],
                           "currency": row["currency"], "period": row["period"],
                           "covers": {k: covers[k] for k in ("subscriptions", "ads", "tips", "periods")},
                           "status": "paid", "processor": "stripe", "transferRefHash": broker.ref_hash(transfer_id),
                           "createdAt": now}
    if row["payee"] != row["did"]:
        rec["payee"] = row["payee"]
    queue_signed(tx, broker, PAYOUT, row["rkey"], rec, now)
    return True


def cancel_payout(tx: sqlite3.Connection, payout_id: str, reason: str, now: str) -> bool:
    """A pending payout whose transfer Stripe refused: the reservation goes back to earnings."""
    row = tx.execute("SELECT did, amount, currency FROM payout WHERE id = ? AND status = 'pending'",
                     (payout_id,)).fetchone()
    if row is None:
        return False
    ledger.reverse(tx, f"payout:{payout_id}", f"payout-cancel:{payout_id}", "payout_cancel", ref=payout_id)
    tx.execute("INSERT INTO earning_line (txn, period, kind, artist, amount, currency, source) VALUES (?,?,?,?,?,?,?)",
               (f"payout-cancel:{payout_id}", now[:7], "payout", row[0], row[1], row[2], payout_id))
    tx.execute("UPDATE payout SET status = 'failed', last_error = ?, updated_at = ? WHERE id = ?",
               (reason[:500], now, payout_id))
    return True
