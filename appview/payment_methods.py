"""Payment methods and the Stripe webhook endpoint.

Every ``fm.openmusic.payment.*`` method here but ``getTiers`` needs a service-auth JWT whose
``lxm`` is the method (``payments.auth``): ``createCreditPurchase``, ``createCardSetup``, ``getBalance``,
``createSubscription``, ``cancelSubscription``, ``getSubscription``, ``getEarnings`` and
``createPayoutAccountLink``. ``POST /stripe/webhook`` takes Stripe's signed deliveries. With
payments off (no Stripe key or broker account configured) these answer 501 ``PaymentsDisabled``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lexrpc.base import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appview.xrpc import XrpcError, head_response, int_cursor, invalid, parse_params
from core.lexicons import validator
from payments.auth import AuthError
from payments.errors import PaymentError

if TYPE_CHECKING:
    from appview.deps import AppViewDeps

log = logging.getLogger("openmusic.appview")
NS = "fm.openmusic.payment."
CREATE_CREDIT_PURCHASE = NS + "createCreditPurchase"
GET_BALANCE = NS + "getBalance"
Handler = Callable[["AppViewDeps", str, Request], Awaitable[dict[str, Any]]]


async def _credit_purchase(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    body = await _input(CREATE_CREDIT_PURCHASE, request)
    return await rt.payments.create_credit_purchase(did, body["amount"], body.get("currency"), body.get("paymentMethod"))


async def _card_setup(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    await _input(NS + "createCardSetup", request)
    return await rt.payments.create_card_setup(did)


async def _balance(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    parse_params(GET_BALANCE, request)
    return await rt.payments.balance(did)


async def _tiers(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    parse_params(NS + "getTiers", request)
    return rt.payments.billing.tier_views()


async def _create_subscription(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    body = await _input(NS + "createSubscription", request)
    return await rt.payments.billing.create(did, body["tier"], body["paymentMethod"])


async def _cancel_subscription(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    body = await _input(NS + "cancelSubscription", request)
    return await rt.payments.billing.cancel(did, body.get("atPeriodEnd", True))


async def _get_subscription(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    parse_params(NS + "getSubscription", request)
    return await rt.payments.billing.get(did)


async def _get_earnings(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    p = parse_params(NS + "getEarnings", request)
    int_cursor(p.get("cursor"))  # a forged cursor is refused here, before it reaches SQLite
    return await rt.payments.earnings(did, p.get("artist") or did, p.get("period"), p["limit"], p.get("cursor"))


async def _payout_link(rt: AppViewDeps, did: str, request: Request) -> dict[str, Any]:
    body = await _input(NS + "createPayoutAccountLink", request)
    return await rt.payments.payout_account_link(did, body.get("returnUrl"), body.get("refreshUrl"))


#: nsid -> (HTTP method, needs service auth, handler(runtime, caller DID or "", request))
PAYMENT_METHODS: dict[str, tuple[str, bool, Handler]] = {
    CREATE_CREDIT_PURCHASE: ("POST", True, _credit_purchase),
    GET_BALANCE: ("GET", True, _balance),
    NS + "createCardSetup": ("POST", True, _card_setup),
    NS + "getTiers": ("GET", False, _tiers),
    NS + "createSubscription": ("POST", True, _create_subscription),
    NS + "cancelSubscription": ("POST", True, _cancel_subscription),
    NS + "getSubscription": ("GET", True, _get_subscription),
    NS + "getEarnings": ("GET", True, _get_earnings),
    NS + "createPayoutAccountLink": ("POST", True, _payout_link),
}


async def _input(nsid: str, request: Request) -> dict[str, Any]:
    """The JSON input of procedure ``nsid``, validated against its lexicon. Raises ``XrpcError``:
    400 ``InvalidRequest`` saying what is wrong, 413 ``PayloadTooLarge`` past the route's body limit."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise invalid("the input must be application/json")
    raw = await request.body()
    try:
        body = json.loads(raw)
        json.dumps(body, ensure_ascii=False).encode()  # lone surrogates ("\ud800") are not text
    except ValueError as exc:  # UnicodeDecodeError / UnicodeEncodeError are ValueErrors too
        raise invalid("the body is not JSON (UTF-8 text)") from exc
    except RecursionError as exc:
        raise invalid("the input is nested too deeply") from exc
    try:
        validator().validate(nsid, "input", body)
    except ValidationError as exc:
        raise invalid(_short(str(exc).replace(f"in {nsid}, ", ""))) from exc
    except RecursionError as exc:
        raise invalid("the input is nested too deeply") from exc
    return body


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


async def payment_method(rt: AppViewDeps, nsid: str, request: Request) -> Response:
    """Dispatch one authenticated payment method; errors as XRPC error bodies."""
    try:
        method, needs_auth, handler = PAYMENT_METHODS[nsid]
        head = request.method == "HEAD" and method == "GET"
        if request.method != method and not head:
            raise XrpcError(405, "InvalidRequest", f"{nsid} takes {method}")
        if rt.payments is None or rt.auth is None:
            raise XrpcError(501, "PaymentsDisabled", "payments are not configured on this AppView")
        did = await rt.auth.verify(request.headers.get("authorization"), nsid) if needs_auth else ""
        response = JSONResponse(await handler(rt, did, request))
        return head_response(response) if head else response
    except AuthError as exc:
        resp = XrpcError(401, exc.error, str(exc)).response()
        resp.headers["WWW-Authenticate"] = 'Bearer realm="openmusic"'
        return resp
    except PaymentError as exc:
        return XrpcError(exc.status, exc.error, str(exc)).response()
    except XrpcError as exc:
        return exc.response()
    except Exception:
        log.exception("%s failed", nsid)
        return XrpcError(500, "InternalServerError", "internal error").response()


async def stripe_webhook(rt: AppViewDeps, request: Request) -> Response:
    """Stripe's webhook deliveries: 200 once recorded (or a duplicate), 400 for a bad signature (Stripe
    will not retry), 500 when we could not record it (Stripe retries)."""
    if rt.payments is None:
        return XrpcError(501, "PaymentsDisabled", "payments are not configured on this AppView").response()
    signature = request.headers.get("stripe-signature")
    if not signature:  # refused before the body is read
        return invalid("webhook rejected: no Stripe-Signature header").response()
    try:
        result = await rt.payments.handle_webhook(await request.body(), signature)
    except XrpcError as exc:  # PayloadTooLarge, past the route's body limit
        return exc.response()
    except PaymentError as exc:
        return XrpcError(exc.status, exc.error, str(exc)).response()
    except Exception:
        log.exception("Stripe webhook failed; Stripe will retry it")
        return XrpcError(500, "InternalServerError", "not recorded; retry").response()
    return JSONResponse(result)
