"""A loopback stand-in for the Stripe Connect endpoints localstripe lacks, for the tests and the demo.

It answers ``POST/GET /v1/accounts``, ``POST /v1/account_links``, ``POST/GET /v1/transfers`` and
``GET /v1/transfers/{id}`` with Stripe's own example objects (``data/stripe_connect_fixtures.json``,
from Stripe's OpenAPI fixtures), filled in with the request's values, so the official ``stripe``
client parses real shapes. Like Stripe it replays the stored response for a repeated
``Idempotency-Key``, and ``transfer_group`` filters the transfer list. The account link's URL is
``/onboard/<account>`` here: visiting it completes onboarding (``payouts_enabled`` becomes true).
Not a payment system: nothing is persisted and there is no auth beyond requiring a bearer key.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route


def _fixtures() -> dict[str, Any]:
    return json.loads(resources.files("devkit").joinpath("data/stripe_connect_fixtures.json").read_text())


def _form(items: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``a[b]=c``) -> nested dicts."""
    out: dict[str, Any] = {}
    for key, value in items:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class ConnectStub:
    """The stub's state and its Starlette app (``app``); ``transfers`` lists what was transferred."""

    def __init__(self) -> None:
        self.fixtures = _fixtures()
        self.accounts: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.idempotent: dict[str, tuple[int, Any]] = {}
        self.requests = itertools.count()
        self.app = Starlette(routes=[
            Route("/v1/accounts", self.create_account, methods=["POST"]),
            Route("/v1/accounts/{id}", self.get_account, methods=["GET"]),
            Route("/v1/account_links", self.create_link, methods=["POST"]),
            Route("/v1/transfers", self.create_transfer, methods=["POST"]),
            Route("/v1/transfers", self.list_transfers, methods=["GET"]),
            Route("/v1/transfers/{id}", self.get_transfer, methods=["GET"]),
            Route("/onboard/{id}", self.onboard, methods=["GET"]),
        ])

    @staticmethod
    def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)

    async def _params(self, request: Request) -> dict[str, Any]:
        body = (await request.body()).decode() or request.url.query
        return _form(parse_qsl(body, keep_blank_values=True))

    async def _once(self, request: Request, make) -> JSONResponse:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return self._error(401, "no API key", "authentication_error")
        key = request.headers.get("idempotency-key")
        if key and key in self.idempotent:
            status, body = self.idempotent[key]
            return JSONResponse(body, status_code=status, headers={"idempotent-replayed": "true"})
        status, body = make(await self._params(request))
        if key:
            self.idempotent[key] = (status, body)
        return JSONResponse(body, status_code=status)

    async def create_account(self, request: Request) -> JSONResponse:
        def make(p: dict[str, Any]) -> tuple[int, Any]:
            acct = copy.deepcopy(self.fixtures["account"])
            acct.update(id=f"acct_{secrets.token_hex(8)}", type=p.get("type", "express"), created=int(time.time()),
                        metadata=p.get("metadata") or {}, payouts_enabled=False, charges_enabled=False,
                        details_submitted=False, email=p.get("email"))
            self.accounts[acct["id"]] = acct
            return 200, acct
        return await self._once(request, make)

    async def get_account(self, request: Request) -> JSONResponse:
        acct = self.accounts.get(request.path_params["id"])
        return JSONResponse(acct) if acct else self._error(404, "No such account")

    async def create_link(self, request: Request) -> JSONResponse:
        def make(p: dict[str, Any]) -> tuple[int, Any]:
            if p.get("account") not in self.accounts:
                return 404, {"error": {"type": "invalid_request_error", "message": "No such account"}}
            link = copy.deepcopy(self.fixtures["account_link"])
            back = p.get("return_url", "")
            query = f"?{urlencode({'return_url': back})}" if back.startswith(("http://", "https://")) else ""
            link.update(created=int(time.time()), expires_at=int(time.time()) + 300,
                        url=f"{request.base_url}onboard/{p['account']}{query}")
            return 200, link
        return await self._once(request, make)

    async def onboard(self, request: Request) -> Response:
        """Onboarding done at once; like Stripe's hosted page, back to the link's ``return_url`` when given."""
        acct = self.accounts.get(request.path_params["id"])
        if not acct:
            return PlainTextResponse("no such account", status_code=404)
        acct.update(payouts_enabled=True, charges_enabled=True, details_submitted=True)
        back = request.query_params.get("return_url", "")
        if back.startswith(("http://", "https://")):
            return RedirectResponse(back, status_code=303)
        return PlainTextResponse("onboarding complete: you can close this page")

    async def create_transfer(self, request: Request) -> JSONResponse:
        def make(p: dict[str, Any]) -> tuple[int, Any]:
            acct = self.accounts.get(p.get("destination", ""))
            if acct is None:
                return 400, {"error": {"type": "invalid_request_error", "message": "No such destination"}}
            if not acct["payouts_enabled"]:
                return 400, {"error": {"type": "invalid_request_error",
                                       "message": "the destination account has not finished onboarding"}}
            tr = copy.deepcopy(self.fixtures["transfer"])
            tr.update(id=f"tr_{secrets.token_hex(8)}", amount=int(p["amount"]), currency=p["currency"],
                      destination=acct["id"], created=int(time.time()), metadata=p.get("metadata") or {},
                      transfer_group=p.get("transfer_group"), balance_transaction=f"txn_{secrets.token_hex(8)}",
                      destination_payment=f"py_{secrets.token_hex(8)}")
            tr["reversals"]["url"] = f"/v1/transfers/{tr['id']}/reversals"
            self.transfers[tr["id"]] = tr
            return 200, tr
        return await self._once(request, make)

    async def list_transfers(self, request: Request) -> JSONResponse:
        group = request.query_params.get("transfer_group")
        data = [t for t in self.transfers.values() if group is None or t["transfer_group"] == group]
        return JSONResponse({"object": "list", "url": "/v1/transfers", "has_more": False, "data": data})

    async def get_transfer(self, request: Request) -> JSONResponse:
        tr = self.transfers.get(request.path_params["id"])
        return JSONResponse(tr) if tr else self._error(404, "No such transfer")


def serve_in_thread(port: int) -> tuple[ConnectStub, uvicorn.Server]:
    """Run a ``ConnectStub`` on ``127.0.0.1:port`` in a daemon thread; returns it once it answers.
    Stop it with ``server.should_exit = True``. Raises ``RuntimeError`` if it does not start."""
    stub = ConnectStub()
    server = uvicorn.Server(uvicorn.Config(stub.app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="connect-stub", daemon=True).start()
    for _ in range(200):
        if server.started:
            return stub, server
        time.sleep(0.02)
    raise RuntimeError(f"the Connect stub did not start on port {port}")
