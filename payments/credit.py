"""Listener credit from Stripe: the ledger follows Stripe's own state of each PaymentIntent.

A webhook is only a trigger: we fetch the PaymentIntent and its refunds from the Stripe API and
``sync_purchase`` brings the ledger to match, with one idempotency key per Stripe object
(``stripe:<pi id>``, ``stripe:<refund id>``, ``stripe:<dispute id>``). Duplicate or reordered
events, and a crash between a Stripe call and our write, therefore change nothing twice and lose
nothing: the next event, or ``openmusic ledger reconcile``, syncs again.

Ledger transactions (``payments.ledger``), in minor units:
  - PaymentIntent succeeded:   stripe:holding -amount,  credit:<did> +amount
  - refund succeeded:          credit:<did> -amount,    stripe:holding +amount
  - dispute opened (funds withdrawn): like a refund; funds reinstated: like the purchase again.
A refund or lost dispute of credit already spent leaves the listener's credit negative (a debt the
ledger shows); tips are refused until it is positive again.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from core.db import now_iso
from payments import ledger

#: ``metadata.purpose`` on the PaymentIntents we create; others on the account are not ours.
PURPOSE = "openmusic_credit"


def sync_purchase(tx: sqlite3.Connection, pi: dict[str, Any], refunds: list[dict[str, Any]], did: str | None = None) -> int:
    """Bring the ledger in line with one Stripe PaymentIntent (``pi``, as the API returns it) and its
    ``refunds``. ``did`` is the buyer when we know it from our own row; else ``metadata.did``
    (ours too: we set it at creation). Returns the number of ledger transactions posted (0 when
    all was already there). Raises ``ValueError`` for a PaymentIntent that is not a credit purchase."""
    meta = pi.get("metadata") or {}
    row = tx.execute("SELECT did FROM credit_purchase WHERE payment_intent = ?", (pi["id"],)).fetchone()
    did = did or (row[0] if row else None) or meta.get("did")
    if meta.get("purpose") != PURPOSE or not did:
        raise ValueError(f"{pi['id']} is not an Open Music credit purchase")
    currency = pi["currency"].upper()
    now = now_iso()
    tx.execute("INSERT INTO credit_purchase (payment_intent, did, customer, amount, currency, status, created_at, updated_at) "
               "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (payment_intent) DO UPDATE SET status = excluded.status, "
               "updated_at = excluded.updated_at",
               (pi["id"], did, pi.get("customer"), pi["amount"], currency, pi["status"], now, now))
    posted = 0
    if pi["status"] == "succeeded":
        posted += ledger.post(tx, f"stripe:{pi['id']}", "credit_purchase", currency,
                              [(ledger.HOLDING, -pi["amount"]), (ledger.credit(did), pi["amount"])], ref=pi["id"])
    for refund in refunds:
        if refund.get("status") == "succeeded" and ledger.posted(tx, f"stripe:{pi['id']}"):
            posted += ledger.post(tx, f"stripe:{refund['id']}", "credit_refund", currency,
                                  [(ledger.credit(did), -refund["amount"]), (ledger.HOLDING, refund["amount"])],
                                  ref=pi["id"])
    return posted


def apply_dispute(tx: sqlite3.Connection, dispute: dict[str, Any], reinstated: bool = False) -> bool:
    """A dispute on a credit purchase (Stripe ``dispute`` object, from a signed webhook): Stripe takes
    the disputed amount back at once, so the buyer's credit goes down by it; if the funds are
    reinstated (dispute won) it comes back. Returns True if a ledger transaction was posted;
    False for a dispute on a payment that is not one of our credit purchases, or already applied."""
    row = tx.execute("SELECT did, currency FROM credit_purchase WHERE payment_intent = ?",
                     (dispute.get("payment_intent"),)).fetchone()
    if not row:
        return False
    did, currency = row
    amount = int(dispute["amount"])
    if reinstated:
        return ledger.post(tx, f"stripe:{dispute['id']}:reinstated", "dispute_reinstated", currency,
                           [(ledger.HOLDING, -amount), (ledger.credit(did), amount)], ref=dispute["payment_intent"])
    return ledger.post(tx, f"stripe:{dispute['id']}", "dispute", currency,
                       [(ledger.credit(did), -amount), (ledger.HOLDING, amount)], ref=dispute["payment_intent"])


def expected_net(pi: dict[str, Any], refunds: list[dict[str, Any]]) -> int:
    """What Stripe says we hold for one PaymentIntent: amount received less succeeded refunds."""
    if pi["status"] != "succeeded":
        return 0
    return pi["amount"] - sum(r["amount"] for r in refunds if r.get("status") == "succeeded")


def ledger_net(tx: sqlite3.Connection, pi_id: str) -> int:
    """What our ledger holds for one PaymentIntent (purchase less refunds and disputes), minor units."""
    (net,) = tx.execute(
        "SELECT COALESCE(-SUM(e.amount), 0) FROM ledger_txn t JOIN ledger_entry e ON e.txn_id = t.id "
        "WHERE t.ref = ? AND e.account = ? AND t.kind IN ('credit_purchase', 'credit_refund', 'dispute', "
        "'dispute_reinstated')", (pi_id, ledger.HOLDING)).fetchone()
    return int(net)
