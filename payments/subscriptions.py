"""Tiers and subscriptions through Stripe Billing; the ledger and the paid streams follow Stripe.

The operator configures tiers (``Settings.tiers``, JSON): ``[{"id": "plus", "name": "Plus",
"monthlyPrice": 999, "stripePrice": "price_..."}]``; the free, ad-supported tier (``free``) always
exists. A subscription is created with the listener's PaymentMethod as the customer's default
(Stripe Billing charges the first invoice at once; 3-D Secure returns a client secret). As with
credit, webhooks are triggers: we fetch the Subscription and its invoices and ``sync_subscription``
brings our tables and the ledger in line, one idempotency key per Stripe invoice.

Per paid invoice (ledger, minor units): ``stripe:holding -net``, ``subscription:<did> +net`` where
net = ``amount_paid`` less Stripe's fee (the charge's balance transaction). Recording a paid invoice
turns the subscriber's free streams in its service period into paid ones (``indexer.streams``).
The broker attests each subscriber's current state with a signed
``fm.openmusic.payment.subscription`` record in its repo (queued in ``broker_outbox``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from core.db import now_iso
from core.lexicons import SUBSCRIPTION
from indexer import streams
from payments import ledger, period
from payments.records import queue_signed, record_key

FREE = "free"
#: ``metadata.purpose`` on the subscriptions we create.
PURPOSE = "openmusic_subscription"


@dataclass(frozen=True)
class Tier:
    """A tier: ``id``, ``name``, ``monthly_price`` (minor units), ``stripe_price`` (a Stripe Price or
    Plan ID; empty for the free tier)."""

    id: str
    name: str
    monthly_price: int
    stripe_price: str = ""

    @property
    def paid(self) -> bool:
        """Whether plays on this tier can be paid streams."""
        return self.monthly_price > 0

    def view(self, currency: str) -> dict[str, Any]:
        """``fm.openmusic.payment.defs#tierView``."""
        return {"id": self.id, "name": self.name, "monthlyPrice": self.monthly_price, "currency": currency,
                "paid": self.paid}


def parse_tiers(raw: str) -> list[Tier]:
    """The tiers from ``Settings.tiers`` (JSON list), the free tier first. Raises ``ValueError`` on
    malformed JSON, a missing field, a non-integer or non-positive price, or a duplicate id."""
    tiers = [Tier(FREE, "Free (with ads)", 0)]
    try:
        items = json.loads(raw) if raw.strip() else []
    except json.JSONDecodeError as exc:
        raise ValueError(f"tiers is not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("tiers must be a JSON list")
    for item in items:
        try:
            tier = Tier(str(item["id"]), str(item["name"]), item["monthlyPrice"], str(item["stripePrice"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"tier {item!r} needs id, name, monthlyPrice and stripePrice") from exc
        if type(tier.monthly_price) is not int or tier.monthly_price <= 0 or not tier.stripe_price:
            raise ValueError(f"tier {tier.id}: monthlyPrice must be a positive integer of minor units and "
                             "stripePrice a Stripe price")
        if tier.id in {t.id for t in tiers}:
            raise ValueError(f"tier {tier.id} is defined twice")
        tiers.append(tier)
    return tiers


def _period(sub: dict[str, Any]) -> tuple[int | None, int | None]:
    """A Subscription's current period (Unix seconds), on the subscription (older API versions) or on
    its first item (newer ones)."""
    start, end = sub.get("current_period_start"), sub.get("current_period_end")
    items = (sub.get("items") or {}).get("data") or []
    if start is None and items:
        start, end = items[0].get("current_period_start"), items[0].get("current_period_end")
    return start, end


def _invoice_period(inv: dict[str, Any]) -> tuple[int, int]:
    """The service period an invoice pays for: its subscription line's ``period`` (the invoice's own
    ``period_start``/``period_end`` describe the previous period for renewals)."""
    for line in (inv.get("lines") or {}).get("data") or []:
        if line.get("period") and line.get("type", "subscription") == "subscription":
            return int(line["period"]["start"]), int(line["period"]["end"])
    return int(inv["period_start"]), int(inv["period_end"])


def sync_subscription(tx: sqlite3.Connection, sub: dict[str, Any], invoices: list[tuple[dict[str, Any], int]],
                      tiers: dict[str, Tier], broker: Any, now: str | None = None) -> int:
    """Bring our tables and the ledger in line with one Stripe Subscription (``sub``) and its invoices
    ``[(invoice, fee in minor units)]``; queue the signed attestation when the listener's state
    changed. Returns the ledger transactions posted. Raises ``ValueError`` for a subscription that is
    not ours (``metadata.purpose``) or names no DID or an unknown tier."""
    meta = sub.get("metadata") or {}
    did, tier_id = meta.get("did"), meta.get("tier")
    if meta.get("purpose") != PURPOSE or not did:
        raise ValueError(f"{sub['id']} is not an Open Music subscription")
    if tier_id not in tiers:
        raise ValueError(f"{sub['id']} is on tier {tier_id!r}, which is not configured")
    now = now or now_iso()
    start, end = _period(sub)
    p_start, p_end = (period.iso(start) if start else None), (period.iso(end) if end else None)
    old = tx.execute("SELECT status, period_start, period_end, cancel_at_period_end FROM subscription WHERE id = ?",
                     (sub["id"],)).fetchone()
    state = (sub["status"], p_start, p_end, int(bool(sub.get("cancel_at_period_end"))))
    tx.execute("INSERT INTO subscription (id, did, tier, status, period_start, period_end, cancel_at_period_end, "
               "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
               "status = excluded.status, period_start = excluded.period_start, period_end = excluded.period_end, "
               "cancel_at_period_end = excluded.cancel_at_period_end, updated_at = excluded.updated_at",
               (sub["id"], did, tier_id, *state, now, now))
    posted = sum(record_invoice(tx, inv, fee, sub["id"], did, tier_id, now) for inv, fee in invoices)
    if tuple(old or ()) != state and broker is not None:
        _attest(tx, broker, did, tiers[tier_id], sub["id"], state, now)
    return posted


def record_invoice(tx: sqlite3.Connection, inv: dict[str, Any], fee: int, subscription_id: str, did: str,
                   tier: str, now: str | None = None) -> int:
    """Record one invoice of a subscription; the first time it is seen paid, post the net fee to the
    subscriber's account and mark their streams of its service period paid. Returns the ledger
    transactions posted (0 or 1). Raises ``ValueError`` when ``fee`` exceeds the amount paid."""
    now = now or now_iso()
    start, end = _invoice_period(inv)
    paid = inv.get("status") == "paid"
    amount = int(inv.get("amount_paid") or 0)
    if fee < 0 or fee > amount:
        raise ValueError(f"invoice {inv['id']}: fee {fee} is not within 0..{amount}")
    currency = str(inv.get("currency") or "").upper()
    tx.execute("INSERT INTO subscription_invoice (id, subscription, did, tier, status, period_start, period_end, "
               "amount_paid, fee, currency, paid_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
               "ON CONFLICT (id) DO UPDATE SET status = excluded.status, amount_paid = excluded.amount_paid, "
               "fee = excluded.fee, paid_at = COALESCE(subscription_invoice.paid_at, excluded.paid_at), "
               "updated_at = excluded.updated_at",
               (inv["id"], subscription_id, did, tier, inv.get("status") or "draft", period.iso(start), period.iso(end),
                amount, fee, currency, now if paid else None, now))
    if not paid or amount == 0:
        return 0
    if not ledger.post(tx, f"stripe:{inv['id']}", "subscription_payment", currency,
                       [(ledger.HOLDING, -(amount - fee)), (period.subscription(did), amount - fee)], ref=inv["id"]):
        return 0
    streams.mark_paid(tx, did, period.iso(start), period.iso(end))
    return 1


def _attest(tx: sqlite3.Connection, broker: Any, did: str, tier: Tier, sub_id: str, state: tuple, now: str) -> None:
    status, p_start, p_end, cancel = state
    rec: dict[str, Any] = {"$type": SUBSCRIPTION, "subject": did, "tier": tier.id, "tierName": tier.name,
                           "paid": tier.paid, "status": status, "currentPeriodStart": p_start or now,
                           "currentPeriodEnd": p_end or now, "cancelAtPeriodEnd": bool(cancel),
                           "processor": "stripe", "processorRefHash": broker.ref_hash(sub_id), "updatedAt": now}
    queue_signed(tx, broker, SUBSCRIPTION, record_key(f"subscription:{did}"), rec, now)


def current(tx: sqlite3.Connection, did: str) -> sqlite3.Row | None:
    """``did``'s latest subscription row (any status), or None."""
    cur = tx.cursor()
    cur.row_factory = sqlite3.Row
    return cur.execute("SELECT * FROM subscription WHERE did = ? ORDER BY updated_at DESC, created_at DESC LIMIT 1",
                       (did,)).fetchone()


def view(row: Any, did: str) -> dict[str, Any]:
    """``fm.openmusic.payment.defs#subscriptionView`` of a subscription row (None: the free tier)."""
    if row is None:
        return {"did": did, "tier": FREE, "status": "none"}
    out = {"did": did, "tier": row["tier"], "status": row["status"], "cancelAtPeriodEnd": bool(row["cancel_at_period_end"])}
    if row["period_start"]:
        out["currentPeriodStart"] = row["period_start"]
    if row["period_end"]:
        out["currentPeriodEnd"] = row["period_end"]
    return out
