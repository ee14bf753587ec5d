"""The broker as the AppView runs it: ``Payments`` holds the Stripe gateway, the service-auth
verifier, the attestation signer and the background workers, and implements the payment
procedures, the Stripe webhook and the operator's refund and reconcile commands.

Every write goes through the indexer's writer (``Indexer.transact``), so ledger transactions never
interleave with firehose batches.

Work that must happen once per database whichever process asks for it, payout runs and period
closes, takes a leadership of its own (``core.leader.PAYOUTS``: an advisory lock on PostgreSQL, a
lock file beside SQLite's database) without waiting, and refuses to run while another process holds
it (``PaymentError`` 409 ``Busy``). The broker's outbox and the settlement verifier run only in the
leading indexer (``openmusic.runtime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import stripe

from core.config import Settings
from core.db import now_iso
from core.leader import PAYOUTS, Leadership, leadership_for
from payments import credit, ledger, managers, payouts, period, settle, subscriptions
from payments.attest import Signer
from payments.auth import SERVICE_ID
from payments.billing import Billing
from payments.earnings import earnings as earnings_view
from payments.errors import PaymentError
from payments.stripe_gateway import StripeGateway

if TYPE_CHECKING:
    from indexer.core import Indexer

log = logging.getLogger("openmusic.payments")
#: Seconds between the checks that keep the payouts lock's session alive during a run (``Payments.once``).
KEEP_S = 5.0


@dataclass
class ReconcileReport:
    """What ``Payments.reconcile`` found: PaymentIntents checked, ledger transactions posted to catch
    up with Stripe (``repaired``), and mismatches left (``problems``: one line each)."""

    checked: int = 0
    repaired: int = 0
    problems: list[str] = field(default_factory=list)


class Payments:
    """Payments for one AppView (see the module docstring). ``broker_did`` is the DID of the broker's
    repo (from its PDS session); ``indexer`` is the AppView's writer."""

    def __init__(self, settings: Settings, indexer: Indexer, broker_did: str) -> None:
        self.settings = settings
        self.indexer = indexer
        self.currency = settings.currency.upper()
        self.service_did = settings.service_did_resolved
        self.signer = Signer(settings.attestation_key, f"{self.service_did}#attestation")
        self.broker = settle.Broker(broker_did, self.signer, settings.processor_ref_salt or settings.attestation_key)
        self.policy = settle.Policy(self.currency, settings.tip_min_artist, settings.tip_min_track, settings.tip_max,
                                    settings.tip_daily_cap)
        self.stripe = StripeGateway(settings.stripe_api_key, settings.stripe_webhook_secret, settings.stripe_api_base,
                                    settings.stripe_connect_api_base)
        self.billing = Billing(self)

    def did_document(self) -> dict[str, Any]:
        """Our did:web document: the ``#attestation`` key that signs settlements, the broker repo in
        ``alsoKnownAs`` (so a verifier can tie the two), and our service endpoint."""
        did = self.service_did
        return {
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": did,
            "alsoKnownAs": [f"at://{self.broker.did}"],
            "verificationMethod": [{"id": f"{did}#attestation", "type": "Multikey", "controller": did,
                                    "publicKeyMultibase": self.signer.multikey}],
            "service": [{"id": f"#{SERVICE_ID}", "type": "OpenMusicAppView",
                         "serviceEndpoint": self.settings.base_url}],
        }

    async def customer(self, did: str) -> str:
        """``did``'s Stripe Customer ID, created (idempotently) on first use."""
        rows = await self.indexer.sql("SELECT customer FROM stripe_customer WHERE did = ?", (did,))
        if rows:
            return rows[0][0]
        customer = await self.stripe.create_customer(did)
        await self.indexer.sql("INSERT INTO stripe_customer (did, customer) VALUES (?, ?) "
                               "ON CONFLICT (did) DO NOTHING", (did, customer))
        return (await self.indexer.sql("SELECT customer FROM stripe_customer WHERE did = ?",
                                       (did,)))[0][0]

    async def create_credit_purchase(self, did: str, amount: int, currency: str | None,
                                     payment_method: str | None = None) -> dict[str, Any]:
        """fm.openmusic.payment.createCreditPurchase for ``did``: a Stripe PaymentIntent of ``amount``
        minor units, confirmed at once with ``payment_method`` when given (its ``status`` returned;
        ``succeeded`` credits the ledger before the webhook arrives). Raises ``PaymentError``
        (UnsupportedCurrency; PaymentFailed, 402, for a declined card; UpstreamFailure)."""
        if currency and currency.upper() != self.currency:
            raise PaymentError(400, "UnsupportedCurrency", f"this AppView sells credit in {self.currency} only")
        try:
            customer = await self.customer(did)
            pi = await self.stripe.create_payment_intent(did, customer, amount, self.currency,
                                                         f"credit:{did}:{secrets.token_hex(8)}", payment_method)
        except stripe.CardError as exc:
            raise PaymentError(402, "PaymentFailed", exc.user_message or "the card was declined") from exc
        except stripe.InvalidRequestError as exc:
            raise PaymentError(400, "PaymentFailed", exc.user_message or "Stripe refused the payment method") from exc
        except stripe.StripeError as exc:
            log.warning("Stripe refused a PaymentIntent: %s", exc.user_message or type(exc).__name__)
            raise PaymentError(502, "UpstreamFailure", "the payment processor is not answering; try again") from exc
        await self.indexer.transact(_record_purchase, pi, did)
        return {"paymentIntent": pi["id"], "clientSecret": pi["client_secret"], "amount": amount,
                "currency": self.currency, "status": pi["status"]}

    async def create_card_setup(self, did: str) -> dict[str, Any]:
        """fm.openmusic.payment.createCardSetup for ``did``: a Stripe SetupIntent to save a card with
        Stripe.js. Returns ``{"setupIntent", "clientSecret"}``. Raises ``PaymentError`` (UpstreamFailure)."""
        try:
            customer = await self.customer(did)
            si = await self.stripe.create_setup_intent(did, customer, f"setup:{did}:{secrets.token_hex(8)}")
        except stripe.StripeError as exc:
            log.warning("Stripe refused a SetupIntent: %s", exc.user_message or type(exc).__name__)
            raise PaymentError(502, "UpstreamFailure", "the payment processor is not answering; try again") from exc
        return {"setupIntent": si["id"], "clientSecret": si["client_secret"]}

    async def balance(self, did: str) -> dict[str, Any]:
        """fm.openmusic.payment.getBalance for ``did``: credit and earnings in minor units."""
        c = await self.indexer.sql(ledger.BALANCE_SQL, (ledger.credit(did), self.currency))
        e = await self.indexer.sql(ledger.BALANCE_SQL, (ledger.earnings(did), self.currency))
        return {"did": did, "credit": int(c[0][0]), "earnings": int(e[0][0]), "currency": self.currency}

    async def handle_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """One Stripe webhook delivery. Raises ``PaymentError`` (400) for a bad signature or payload;
        returns ``{"received": True, "duplicate": bool}``. Event types used:
        ``payment_intent.*``, ``charge.refunded``, ``refund.*``, ``charge.dispute.created``,
        ``charge.dispute.funds_reinstated``, ``customer.subscription.*``, ``invoice.*`` and
        ``account.updated`` (Connect); others
        are acknowledged and ignored."""
        try:
            event = self.stripe.parse_webhook(payload, signature)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            raise PaymentError(400, "InvalidRequest", f"webhook rejected: {type(exc).__name__}") from exc
        seen = await self.indexer.sql("SELECT 1 FROM stripe_event WHERE id = ?", (event["id"],))
        if seen:
            return {"received": True, "duplicate": True}
        obj = event["data"]["object"]
        etype = event["type"]
        pi_id = obj.get("id") if obj.get("object") == "payment_intent" else obj.get("payment_intent")
        if etype.startswith("charge.dispute."):
            reinstated = etype == "charge.dispute.funds_reinstated"
            if etype in ("charge.dispute.created", "charge.dispute.funds_reinstated"):
                await self.indexer.transact(lambda tx: credit.apply_dispute(tx, obj, reinstated))
        elif etype == "account.updated" and obj.get("object") == "account":  # Connect onboarding progressed
            await self.indexer.sql("UPDATE payout_account SET payouts_enabled = ?, updated_at = ? WHERE account = ?",
                                   (int(bool(obj.get("payouts_enabled"))), now_iso(), obj.get("id")))
        elif sub_id := Billing.subscription_of(etype, obj):
            await self.billing.sync(sub_id)
            pi_id = sub_id
        elif pi_id and (etype.startswith("payment_intent.") or etype.startswith("refund.") or etype == "charge.refunded"):
            await self.sync_payment_intent(pi_id)
        await self.indexer.sql("INSERT INTO stripe_event (id, type, object_id, received_at) "
                               "VALUES (?,?,?,datetime('now')) ON CONFLICT DO NOTHING", (event["id"], etype, pi_id))
        return {"received": True, "duplicate": False}

    async def sync_payment_intent(self, pi_id: str) -> int:
        """Fetch one PaymentIntent (and refunds) from Stripe and bring the ledger in line. Returns
        the ledger transactions posted; 0 for a PaymentIntent that is not a credit purchase."""
        pi, refunds = await self.stripe.payment_intent(pi_id)
        if (pi.get("metadata") or {}).get("purpose") != credit.PURPOSE:
            return 0
        return await self.indexer.transact(credit.sync_purchase, pi, refunds)

    async def earnings(self, caller: str, artist: str, period: str | None, limit: int,
                       cursor: str | None) -> dict[str, Any]:
        """fm.openmusic.payment.getEarnings for ``artist``, asked by ``caller`` (the artist, or a manager
        both sides agree on). Raises ``PaymentError`` (NotManager, InvalidRequest)."""
        if caller != artist and not await self.indexer.run(lambda: managers.manages(self.indexer.conn, caller, artist)):
            raise PaymentError(403, "NotManager", f"{caller} is not a manager {artist} has named")
        if cursor is not None and not cursor.isdigit():
            raise PaymentError(400, "InvalidRequest", "malformed cursor")
        def view(tx: Any) -> dict[str, Any]:
            out = earnings_view(tx, artist, self.currency, period, limit, int(cursor) if cursor else None)
            if caller == artist and (artists := managers.managed_artists(tx, caller)):
                out["managed"] = []
                for other in artists:
                    e = earnings_view(tx, other, self.currency, period, 1, None)
                    out["managed"].append({"artist": other, "total": e["total"], "balance": e["balance"],
                                           "payoutToManager": managers.payee(tx, other) == caller})
                out["combinedBalance"] = out["balance"] + sum(m["balance"] for m in out["managed"])
            return out

        try:
            return await self.indexer.run(lambda: view(self.indexer.conn))
        except ValueError as exc:
            raise PaymentError(400, "InvalidRequest", str(exc)) from exc

    async def payout_account_link(self, did: str, return_url: str | None, refresh_url: str | None) -> dict[str, Any]:
        """fm.openmusic.payment.createPayoutAccountLink: the caller's Express account (made once) and a
        fresh onboarding link. Raises ``PaymentError`` (UpstreamFailure)."""
        base = self.settings.base_url
        try:
            rows = await self.indexer.sql("SELECT account FROM payout_account WHERE did = ?", (did,))
            if rows:
                account = rows[0][0]
            else:
                account = (await self.stripe.create_connected_account(did))["id"]
                await self.indexer.sql("INSERT INTO payout_account (did, account, created_at, updated_at) "
                                       "VALUES (?,?,?,?) ON CONFLICT (did) DO NOTHING", (did, account, now_iso(), now_iso()))
            link = await self.stripe.account_link(account, return_url or base, refresh_url or base)
        except stripe.StripeError as exc:
            log.warning("Stripe Connect refused: %s", exc.user_message or type(exc).__name__)
            raise PaymentError(502, "UpstreamFailure", "the payment processor is not answering; try again") from exc
        return {"url": link["url"], "expiresAt": period.iso(int(link["expires_at"]))}

    @contextlib.asynccontextmanager
    async def once(self, what: str) -> AsyncIterator[None]:
        """Hold the payouts leadership (``core.leader.PAYOUTS``) for the body, taken without waiting
        and released after it. Raises ``PaymentError`` (409 ``Busy``) when another process holds it."""
        lead = leadership_for(self.settings, PAYOUTS)
        if not await lead.acquire():
            holder = lead.holder() or {}
            who = (f"process {holder.get('pid') or '?'} on {holder.get('host') or '?'}" if holder
                   else "another process")
            await lead.release()
            raise PaymentError(409, "Busy", f"cannot {what} now: {who} is running a payout run or a period close "
                                            "on this database; try again once it has finished")
        keep = asyncio.create_task(self._keep(lead, what), name="payouts-lock")
        try:
            yield
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep
            await lead.release()

    @staticmethod
    async def _keep(lead: Leadership, what: str) -> None:
        """Ask ``lead`` every ``KEEP_S`` seconds whether it is still held: on PostgreSQL this keeps
        its session from counting as idle (``core.leader.IDLE_SESSION_S``) through a long run.
        A lost lock is logged; the run goes on (each payout's transfer is looked up by its transfer
        group before it is made, so a run beside it does not pay the same payout twice)."""
        while True:
            await asyncio.sleep(KEEP_S)
            if not await lead.holding():
                break
        log.error("the payouts lock was lost while trying to %s; finish, then check `openmusic ledger check`", what)

    async def close_period(self, period_: str) -> period.CloseReport:
        """Split the period's subscription fees and ad pool (``payments.period.close_period``), under
        the payouts leadership (``once``). Raises ``PaymentError`` (409 ``Busy``) while another
        process runs payouts or a close."""
        async with self.once(f"close {period_}"):
            return await self.indexer.transact(period.close_period, period_, self.settings.platform_share_bps,
                                               self.broker.salt)

    async def enter_ad_revenue(self, period_: str, amount: int) -> bool:
        """The operator enters a period's ad revenue (minor units of our currency)."""
        return await self.indexer.transact(period.enter_ad_revenue, period_, amount, self.currency)

    async def run_payouts(self, after_transfer: Any = None) -> dict[str, int]:
        """``openmusic payouts run``: refresh the payout accounts, open payouts (``payments.payouts``)
        and send every pending one, under the payouts leadership (``once``: one run at a time per
        database; ``PaymentError`` 409 ``Busy`` while another process runs one or a period close).
        ``after_transfer(payout_id)`` is a test hook called between the transfer and its booking (where
        a crash must not pay twice). Returns counts."""
        async with self.once("run payouts"):
            return await self._run_payouts(after_transfer)

    async def _run_payouts(self, after_transfer: Any) -> dict[str, int]:
        counts = {"opened": 0, "paid": 0, "failed": 0, "waiting": 0}
        for did, account in await self.indexer.sql("SELECT did, account FROM payout_account"):
            try:
                acct = await self.stripe.connected_account(account)
            except stripe.StripeError as exc:
                log.warning("could not refresh payout account of %s: %s", did, type(exc).__name__)
                continue
            await self.indexer.sql("UPDATE payout_account SET payouts_enabled = ?, updated_at = ? WHERE did = ?",
                                   (int(bool(acct.get("payouts_enabled"))), now_iso(), did))
        opened = await self.indexer.transact(payouts.open_payouts, self.settings.payout_threshold, self.currency,
                                             self.broker.did, now_iso())
        counts["opened"] = len(opened)
        for pid, amount, currency, account in await self.indexer.sql(
                "SELECT id, amount, currency, account FROM payout WHERE status = 'pending' ORDER BY created_at"):
            try:
                made = await self.stripe.transfers_in_group(pid)
                transfer = made[0] if made else await self.stripe.transfer(amount, currency, account, pid)
            except stripe.InvalidRequestError as exc:
                await self.indexer.transact(payouts.cancel_payout, pid, exc.user_message or str(exc), now_iso())
                counts["failed"] += 1
                continue
            except stripe.StripeError as exc:
                log.warning("transfer for %s not made now (%s); the next run retries", pid, type(exc).__name__)
                counts["waiting"] += 1
                continue
            if after_transfer:
                after_transfer(pid)
            if await self.indexer.transact(payouts.complete_payout, pid, transfer["id"], self.broker, now_iso()):
                counts["paid"] += 1
        return counts

    async def refund_purchase(self, pi_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund (part of) a credit purchase through Stripe, then sync the ledger. Refuses to refund
        more than the buyer's unspent credit. Raises ``PaymentError``."""
        rows = await self.indexer.sql("SELECT did, amount FROM credit_purchase WHERE payment_intent = ?",
                                      (pi_id,))
        if not rows:
            raise PaymentError(404, "NotFound", f"{pi_id} is not a known credit purchase")
        did, bought = rows[0]
        left = (await self.balance(did))["credit"]
        amount = amount or bought
        if amount > left:
            raise PaymentError(400, "InsufficientCredit", f"{did} has {left} left of this credit; refund at most that")
        refunded = (await self.indexer.sql("SELECT COUNT(*) FROM ledger_txn WHERE ref = ? AND kind = "
                                           "'credit_refund'", (pi_id,)))[0][0]
        refund = await self.stripe.refund(pi_id, amount, f"refund:{pi_id}:{refunded}")
        await self.sync_payment_intent(pi_id)
        return refund

    async def refund_tip(self, tip_uri: str) -> bool:
        """Refund a settled tip from the artist's earnings to the payer's credit; the settlement
        record is republished with status ``refunded``. False when the tip was not settled."""
        return await self.indexer.transact(settle.refund_tip, tip_uri, self.broker, now_iso())

    async def reconcile(self, repair: bool = True) -> ReconcileReport:
        """Compare every credit PaymentIntent and every subscription invoice on Stripe with the
        ledger: with ``repair``, post what is missing first (the crash-between-Stripe-and-ledger
        case); then report what still differs (including ledger purchases Stripe does not know)."""
        report = ReconcileReport()
        known = set()
        for pi in await self.stripe.credit_payment_intents():
            known.add(pi["id"])
            report.checked += 1
            pi, refunds = await self.stripe.payment_intent(pi["id"])
            if repair:
                report.repaired += await self.indexer.transact(credit.sync_purchase, pi, refunds)
            ours = await self.indexer.run(lambda p=pi["id"]: credit.ledger_net(self.indexer.conn, p))
            theirs = credit.expected_net(pi, refunds)
            if ours != theirs:
                report.problems.append(f"{pi['id']}: Stripe holds {theirs}, the ledger {ours}")
        for (pi_id,) in await self.indexer.sql("SELECT DISTINCT ref FROM ledger_txn WHERE kind = "
                                               "'credit_purchase'"):
            if pi_id not in known:
                report.problems.append(f"{pi_id}: in the ledger, not a credit purchase on Stripe")
        for sub_id in await self.stripe.our_subscription_ids():  # subscriptions: Stripe's invoices are the truth
            report.checked += 1
            sub, invoices = await self.stripe.subscription(sub_id)
            if repair:
                report.repaired += await self.indexer.transact(
                    subscriptions.sync_subscription, sub, invoices, self.billing.tiers, self.broker)
            for inv, fee in invoices:
                want = inv["amount_paid"] - fee if inv.get("status") == "paid" else 0
                rows = await self.indexer.sql("SELECT COALESCE(SUM(amount), 0) FROM ledger_entry e JOIN ledger_txn t "
                                              "ON t.id = e.txn_id WHERE t.idem_key = ? AND e.account = ?",
                                              (f"stripe:{inv['id']}", ledger.HOLDING))
                if -int(rows[0][0]) != want:
                    report.problems.append(f"{inv['id']}: Stripe says {want} net, the ledger {-int(rows[0][0])}")
        return report

    async def close(self) -> None:
        await self.stripe.close()


def _record_purchase(tx: Any, pi: dict[str, Any], did: str) -> None:
    credit.sync_purchase(tx, pi, [], did)
