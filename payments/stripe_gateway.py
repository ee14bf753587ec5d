"""Stripe, through the official ``stripe`` client (``StripeClient`` with its httpx transport, async).

``api_base`` points it at another server (localstripe on loopback in the tests and the demo); the
API key and the webhook signing secret come from the environment only and are never logged.
Webhooks are verified with ``stripe.Webhook.construct_event`` (HMAC-SHA256, 5-minute tolerance).
"""

from __future__ import annotations

from typing import Any

import stripe

from payments.credit import PURPOSE
from payments.subscriptions import PURPOSE as SUBSCRIPTION_PURPOSE


class StripeGateway:
    """The Stripe calls the broker makes. Every create carries an idempotency key, so a retried call
    after a timeout cannot charge or refund twice. Raises ``stripe.StripeError`` subclasses."""

    def __init__(self, api_key: str, webhook_secret: str, api_base: str = "", connect_base: str = "") -> None:
        bases = {"api": api_base.rstrip("/")} if api_base else {}
        self._http = stripe.HTTPXClient()
        self._client = stripe.StripeClient(api_key, base_addresses=bases, http_client=self._http,
                                           max_network_retries=2)
        self._webhook_secret = webhook_secret
        self.v1 = self._client.v1
        connect = {"api": connect_base.rstrip("/")} if connect_base else bases
        #: Connect calls (accounts, account links, transfers): the same account, maybe another base URL
        self.connect = stripe.StripeClient(api_key, base_addresses=connect, http_client=self._http,
                                           max_network_retries=2).v1

    async def create_connected_account(self, did: str) -> dict[str, Any]:
        """An Express connected account for an artist (``metadata.did``), once per DID."""
        acct = await self.connect.accounts.create_async(
            params={"type": "express", "metadata": {"did": did}, "capabilities": {"transfers": {"requested": True}}},
            options={"idempotency_key": f"account:{did}"})
        return acct.to_dict()

    async def connected_account(self, account: str) -> dict[str, Any]:
        """A connected account as Stripe holds it now (``payouts_enabled`` tells onboarding is done)."""
        return (await self.connect.accounts.retrieve_async(account)).to_dict()

    async def account_link(self, account: str, return_url: str, refresh_url: str) -> dict[str, Any]:
        """A one-time onboarding link (``url``, ``expires_at``) for a connected account."""
        link = await self.connect.account_links.create_async(params={
            "account": account, "type": "account_onboarding", "return_url": return_url, "refresh_url": refresh_url})
        return link.to_dict()

    async def transfer(self, amount: int, currency: str, destination: str, group: str) -> dict[str, Any]:
        """Move ``amount`` minor units to a connected account. ``group`` (our payout ID) is both the
        idempotency key and the ``transfer_group``, so a retry, even after Stripe forgot the key,
        finds the first transfer instead of making a second (see ``transfers_in_group``)."""
        tr = await self.connect.transfers.create_async(
            params={"amount": amount, "currency": currency.lower(), "destination": destination,
                    "transfer_group": group, "metadata": {"payout": group}},
            options={"idempotency_key": group})
        return tr.to_dict()

    async def transfers_in_group(self, group: str) -> list[dict[str, Any]]:
        """The transfers already made for one payout (``transfer_group``)."""
        page = await self.connect.transfers.list_async(params={"transfer_group": group, "limit": 10})
        return [t.to_dict() for t in page.data]

    async def create_customer(self, did: str) -> str:
        """A Stripe Customer for one listener (``metadata.did``); returns its ID."""
        customer = await self.v1.customers.create_async(params={"metadata": {"did": did}},
                                                        options={"idempotency_key": f"customer:{did}"})
        return customer.id

    async def create_payment_intent(self, did: str, customer: str, amount: int, currency: str,
                                    idempotency_key: str, payment_method: str | None = None) -> dict[str, Any]:
        """A PaymentIntent for ``amount`` minor units of credit (``metadata``: purpose, did). With
        ``payment_method`` (a card saved through a SetupIntent) it is confirmed at once, the buyer
        present: ``status`` is then ``succeeded``, or ``requires_action`` (3-D Secure, finished in the
        browser with Stripe.js ``confirmCardPayment``)."""
        params: dict[str, Any] = {"amount": amount, "currency": currency.lower(), "customer": customer,
                                  "metadata": {"purpose": PURPOSE, "did": did}}
        if payment_method:
            params |= {"payment_method": payment_method, "confirm": True, "payment_method_types": ["card"]}
        pi = await self.v1.payment_intents.create_async(params=params, options={"idempotency_key": idempotency_key})
        return pi.to_dict()

    async def create_setup_intent(self, did: str, customer: str, idempotency_key: str) -> dict[str, Any]:
        """A SetupIntent saving a card for ``customer`` (Stripe.js ``confirmCardSetup`` completes it in
        the browser and yields the PaymentMethod that credit purchases and subscriptions then charge)."""
        si = await self.v1.setup_intents.create_async(
            params={"customer": customer, "usage": "on_session", "payment_method_types": ["card"],
                    "metadata": {"purpose": PURPOSE, "did": did}},
            options={"idempotency_key": idempotency_key})
        return si.to_dict()

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
        return await self._ours(self.v1.payment_intents.list_async, PURPOSE, {})

    @staticmethod
    async def _ours(list_async: Any, purpose: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every object a Stripe list method returns (all pages) whose ``metadata.purpose`` is ours."""
        out, after = [], None
        while True:
            page = await list_async(params={**params, "limit": 100, **({"starting_after": after} if after else {})})
            out += [o for o in (x.to_dict() for x in page.data) if (o.get("metadata") or {}).get("purpose") == purpose]
            if not page.has_more or not page.data:
                return out
            after = page.data[-1].id

    async def set_default_payment_method(self, customer: str, payment_method: str) -> None:
        """Attach a PaymentMethod (collected by Stripe.js) to ``customer`` and make it the default for
        invoices, which Stripe Billing charges."""
        await self.v1.payment_methods.attach_async(payment_method, params={"customer": customer})
        await self.v1.customers.update_async(customer, params={
            "invoice_settings": {"default_payment_method": payment_method}})

    async def create_subscription(self, customer: str, price: str, did: str, tier: str,
                                  idempotency_key: str) -> dict[str, Any]:
        """A Subscription of ``customer`` to ``price`` (``metadata``: purpose, did, tier). The item is
        given as ``plan``, which Stripe still accepts for prices and localstripe requires."""
        sub = await self.v1.subscriptions.create_async(
            params={"customer": customer, "items": [{"plan": price}], "payment_behavior": "allow_incomplete",
                    "metadata": {"purpose": SUBSCRIPTION_PURPOSE, "did": did, "tier": tier}},
            options={"idempotency_key": idempotency_key})
        return sub.to_dict()

    async def cancel_subscription(self, sub_id: str, at_period_end: bool) -> dict[str, Any]:
        """End a Subscription now, or at the end of the paid period."""
        if at_period_end:
            sub = await self.v1.subscriptions.update_async(sub_id, params={"cancel_at_period_end": True})
        else:
            sub = await self.v1.subscriptions.cancel_async(sub_id)
        return sub.to_dict()

    async def subscription(self, sub_id: str) -> tuple[dict[str, Any], list[tuple[dict[str, Any], int]]]:
        """A Subscription and its invoices, each with Stripe's fee on its charge (minor units, from the
        charge's balance transaction; 0 when Stripe reports none)."""
        sub = (await self.v1.subscriptions.retrieve_async(sub_id)).to_dict()
        page = await self.v1.invoices.list_async(params={"subscription": sub_id, "limit": 100})
        out = []
        for inv in (i.to_dict() for i in page.data):
            out.append((inv, await self._fee(inv.get("charge")) if inv.get("status") == "paid" else 0))
        return sub, out

    async def our_subscription_ids(self) -> list[str]:
        """The IDs of every Subscription on the account that is ours (``metadata.purpose``), paged."""
        return [s["id"] for s in await self._ours(self.v1.subscriptions.list_async, SUBSCRIPTION_PURPOSE,
                                                  {"status": "all"})]

    async def _fee(self, charge: Any) -> int:
        charge_id = charge.get("id") if isinstance(charge, dict) else charge
        if not charge_id:
            return 0
        ch = (await self.v1.charges.retrieve_async(charge_id)).to_dict()
        bt = ch.get("balance_transaction")
        if isinstance(bt, str):
            bt = (await self.v1.balance_transactions.retrieve_async(bt)).to_dict()
        return int((bt or {}).get("fee") or 0)

    def parse_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """Verify and decode a webhook delivery. Raises ``ValueError`` (bad JSON) or
        ``stripe.SignatureVerificationError`` (bad or stale signature)."""
        return stripe.Webhook.construct_event(payload, signature, self._webhook_secret).to_dict()

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.close_async()
