"""Authenticated payment methods and the Stripe webhook endpoint.

``fm.openmusic.payment.createCreditPurchase`` (procedure, POST) and ``payment.getBalance`` (query,
GET) need a service-auth JWT whose ``lxm`` is the method (``payments.auth``). ``POST
/stripe/webhook`` takes Stripe's signed deliveries. With payments off (no Stripe key or broker
account configured) these answer 501 ``PaymentsDisabled``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lexrpc.base import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appview.xrpc import XrpcError, invalid, parse_params
from openmusic.lexicons import validator
from payments.auth import AuthError
from payments.service import PaymentError

if TYPE_CHECKING:
    from openmusic.runtime import Runtime

log = logging.getLogger("openmusic.appview")
CREATE_CREDIT_PURCHASE = "fm.openmusic.payment.createCreditPurchase"
GET_BALANCE = "fm.openmusic.payment.getBalance"
#: nsid -> HTTP method
PAYMENT_METHODS = {CREATE_CREDIT_PURCHASE: "POST", GET_BALANCE: "GET"}


async def _input(nsid: str, request: Request) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise invalid("the input must be application/json")
    try:
        body = await request.json()
        validator().validate(nsid, "input", body)
    except ValueError as exc:
        raise invalid("the body is not JSON") from exc
    except ValidationError as exc:
        raise invalid(str(exc).replace(f"in {nsid}, ", "")) from exc
    return body


async def payment_method(rt: Runtime, nsid: str, request: Request) -> Response:
    """Dispatch one authenticated payment method; errors as XRPC error bodies."""
    try:
        if request.method != PAYMENT_METHODS[nsid]:
            raise XrpcError(405, "InvalidRequest", f"{nsid} takes {PAYMENT_METHODS[nsid]}")
        if rt.payments is None or rt.auth is None:
            raise XrpcError(501, "PaymentsDisabled", "payments are not configured on this AppView")
        did = await rt.auth.verify(request.headers.get("authorization"), nsid)
        if nsid == CREATE_CREDIT_PURCHASE:
            body = await _input(nsid, request)
            return JSONResponse(await rt.payments.create_credit_purchase(did, body["amount"], body.get("currency")))
        parse_params(nsid, request)
        return JSONResponse(await rt.payments.balance(did))
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


async def stripe_webhook(rt: Runtime, request: Request) -> Response:
    """Stripe's webhook deliveries: 200 once recorded (or a duplicate), 400 for a bad signature (Stripe
    will not retry), 500 when we could not record it (Stripe retries)."""
    if rt.payments is None:
        return XrpcError(501, "PaymentsDisabled", "payments are not configured on this AppView").response()
    try:
        result = await rt.payments.handle_webhook(await request.body(), request.headers.get("stripe-signature"))
    except PaymentError as exc:
        return XrpcError(exc.status, exc.error, str(exc)).response()
    except Exception:
        log.exception("Stripe webhook failed; Stripe will retry it")
        return XrpcError(500, "InternalServerError", "not recorded; retry").response()
    return JSONResponse(result)
