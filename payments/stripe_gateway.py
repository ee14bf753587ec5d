"""Stripe, through the official ``stripe`` client (``StripeClient`` with its httpx transport, async).

``api_base`` points it at another server (localstripe on loopback in the tests and the demo); the
API key and the webhook signing secret come from the environment only and are never logged.
Webhooks are verified with ``stripe.Webhook.construct_event`` (HMAC-SHA256, 5-minute tolerance).
"""

from __future__ import annotations

from typing import Any

import stripe

from payments.credit import PURPOSE


class StripeGateway:
    """The Stripe calls the broker makes. Every create carries an idempotency key, so a retried call
    after a timeout cannot charge or refund twice. Raises ``stripe.StripeError`` subclasses."""

    def __init__(self, api_key: str, webhook_secret: str, api_base: str = "") -> None:
        bases = {"api": api_base.rstrip("/")} if api_base else {}
        self._http = stripe.HTTPXClient()
        self._client = stripe.StripeClient(api_key, base_addresses=bases, http_client=self._http,
                                           max_network_retries=2)
        self._webhook_secret = webhook_secret
        self.v1 = self._client.v1

    async def create_customer(self, did: str) -> str:
        """A Stripe Customer for one listener (``metadata.did``); returns its ID."""
        customer = await self.v1.customers.create_async(params={"metadata": {"did": did}},
                                                        options={"idempotency_key": f"customer:{did}"})
        return customer.id

    async def create_payment_intent(self, did: str, customer: str, amount: int, currency: str,
                                    idempotency_key: str) -> dict[str, Any]:
        """A PaymentIntent for ``amount`` minor units of credit (``metadata``: purpose, did)."""
        pi = await self.v1.payment_intents.create_async(
            params={"amount": amount, "currency": currency.lower(), "customer": customer,
                    "metadata": {"purpose": PURPOSE, "did": did}},
            options={"idempotency_key": idempotency_key})
        return pi.to_dict()

    async def payment_intent(self, pi_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A PaymentIntent and its refunds, as Stripe holds them now."""
        pi = await self.v1.payment_intents.retrieve_async(pi_id)
        refunds = await self.v1.refunds.list_async(params={"payment_intent": pi_id, "limit": 100}) \
            if pi.status == "succeeded" else None
        return pi.to_dict(), [r.to_dict() for r in refunds.data] if refunds else []

    async def refund(self, pi_id: str, amount: int | None, idempotency_key: str) -> dict[str, Any]:
        """Refund ``amount`` minor units (all when None) of a PaymentIntent."""
        params: dict[str, Any] = {"payment_intent": pi_id}
        if amount:
            params["amount"] = amount
        refund = await self.v1.refunds.create_async(params=params, options={"idempotency_key": idempotency_key})
        return refund.to_dict()

    async def credit_payment_intents(self) -> list[dict[str, Any]]:
        """Every PaymentIntent on the account that is one of our credit purchases (paged)."""
        out, after = [], None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["starting_after"] = after
            page = await self.v1.payment_intents.list_async(params=params)
            out += [p for p in (x.to_dict() for x in page.data) if (p.get("metadata") or {}).get("purpose") == PURPOSE]
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].id

    def parse_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """Verify and decode a webhook delivery. Raises ``ValueError`` (bad JSON) or
        ``stripe.SignatureVerificationError`` (bad or stale signature)."""
        return stripe.Webhook.construct_event(payload, signature, self._webhook_secret).to_dict()

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.close_async()
