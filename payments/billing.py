"""Subscriptions for the AppView (``fm.openmusic.payment.getTiers``, ``createSubscription``,
``cancelSubscription``, ``getSubscription``) and the Stripe Billing webhooks; the bookkeeping is
``payments.subscriptions``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import stripe

from payments import subscriptions
from payments.errors import PaymentError
from payments.subscriptions import Tier, parse_tiers

if TYPE_CHECKING:
    from core.config import Settings
    from indexer.core import Indexer
    from payments.settle import Broker
    from payments.stripe_gateway import StripeGateway

log = logging.getLogger("openmusic.payments")
#: Subscription states in which a new subscription is refused (the listener already has one).
LIVE = ("active", "past_due", "incomplete", "trialing", "unpaid")


class BillingHost(Protocol):
    """What ``Billing`` uses of its owner (``payments.service.Payments``, which builds it)."""

    settings: Settings
    currency: str
    indexer: Indexer
    stripe: StripeGateway
    broker: Broker

    async def customer(self, did: str) -> str:
        """The Stripe Customer ID of ``did``, created on first use."""
        ...


class Billing:
    """Stripe Billing for one AppView's ``Payments`` (a ``BillingHost``). Raises ``PaymentError``
    from its procedures."""

    def __init__(self, payments: BillingHost) -> None:
        self.p = payments
        self.tiers: dict[str, Tier] = {t.id: t for t in parse_tiers(payments.settings.tiers)}

    def tier_views(self) -> dict[str, Any]:
        """fm.openmusic.payment.getTiers."""
        return {"tiers": [t.view(self.p.currency) for t in self.tiers.values()]}

    async def _current(self, did: str) -> Any:
        return await self.p.indexer.run(lambda: subscriptions.current(self.p.indexer.conn, did))

    async def get(self, did: str) -> dict[str, Any]:
        """fm.openmusic.payment.getSubscription for ``did``."""
        row = await self._current(did)
        return subscriptions.view(row, did)

    async def create(self, did: str, tier_id: str, payment_method: str) -> dict[str, Any]:
        """fm.openmusic.payment.createSubscription: charge the first month at once. Raises
        ``PaymentError`` (UnknownTier, AlreadySubscribed, PaymentFailed, UpstreamFailure)."""
        tier = self.tiers.get(tier_id)
        if tier is None or not tier.paid:
            raise PaymentError(400, "UnknownTier", f"no paid tier {tier_id!r}; see payment.getTiers")
        row = await self._current(did)
        if row is not None and row["status"] in LIVE:
            raise PaymentError(409, "AlreadySubscribed", f"{did} already has a subscription ({row['status']})")
        try:
            customer = await self.p.customer(did)
            await self.p.stripe.set_default_payment_method(customer, payment_method)
            # one key per attempt: a retry after a timeout gets the same subscription back, never a second
            (tries,) = (await self.p.indexer.sql("SELECT COUNT(*) FROM subscription WHERE did = ?", (did,)))[0]
            sub = await self.p.stripe.create_subscription(customer, tier.stripe_price, did, tier.id,
                                                          f"subscription:{did}:{tries}:{tier.id}")
        except stripe.CardError as exc:
            raise PaymentError(402, "PaymentFailed", exc.user_message or "the card was declined") from exc
        except stripe.InvalidRequestError as exc:
            raise PaymentError(400, "PaymentFailed", exc.user_message or "Stripe refused the payment method") from exc
        except stripe.StripeError as exc:
            log.warning("Stripe refused a subscription: %s", exc.user_message or type(exc).__name__)
            raise PaymentError(502, "UpstreamFailure", "the payment processor is not answering; try again") from exc
        await self.sync(sub["id"])
        out = await self.get(did)
        if out["status"] == "incomplete":
            secret = await self._client_secret(sub)
            if secret:
                out["clientSecret"] = secret
        return out

    async def _client_secret(self, sub: dict[str, Any]) -> str | None:
        inv_id = sub.get("latest_invoice")
        inv_id = inv_id.get("id") if isinstance(inv_id, dict) else inv_id
        if not inv_id:
            return None
        inv = await self.p.stripe.v1.invoices.retrieve_async(inv_id)
        if not getattr(inv, "payment_intent", None):
            return None
        pi = await self.p.stripe.v1.payment_intents.retrieve_async(inv.payment_intent)
        return pi.client_secret

    async def cancel(self, did: str, at_period_end: bool = True) -> dict[str, Any]:
        """fm.openmusic.payment.cancelSubscription. Raises ``PaymentError`` (NotSubscribed, UpstreamFailure)."""
        row = await self._current(did)
        if row is None or row["status"] not in LIVE:
            raise PaymentError(400, "NotSubscribed", f"{did} has no subscription to cancel")
        try:
            await self.p.stripe.cancel_subscription(row["id"], at_period_end)
        except stripe.StripeError as exc:
            raise PaymentError(502, "UpstreamFailure", "the payment processor is not answering; try again") from exc
        await self.sync(row["id"])
        return await self.get(did)

    async def sync(self, sub_id: str) -> int:
        """Fetch a Subscription and its invoices from Stripe and bring our books in line (the webhook
        handler and ``openmusic ledger reconcile`` call this). Returns ledger transactions posted;
        0 for a subscription that is not ours."""
        sub, invoices = await self.p.stripe.subscription(sub_id)
        if (sub.get("metadata") or {}).get("purpose") != subscriptions.PURPOSE:
            return 0
        return await self.p.indexer.transact(subscriptions.sync_subscription, sub, invoices, self.tiers,
                                             self.p.broker)

    @staticmethod
    def subscription_of(event_type: str, obj: dict[str, Any]) -> str | None:
        """The Subscription ID a ``customer.subscription.*`` or ``invoice.*`` event is about, if any."""
        if event_type.startswith("customer.subscription."):
            return obj.get("id")
        if event_type.startswith("invoice."):
            sub = obj.get("subscription") or ((obj.get("parent") or {}).get("subscription_details") or {}).get(
                "subscription")
            return sub.get("id") if isinstance(sub, dict) else sub
        return None
