"""Money in the web app: the wallet (credit, buying credit, the subscription) and tips.

Amounts are integers in minor units of the AppView's one currency (``Settings.currency``); the pages
format them per locale with Babel, and parse what a person types ("1.50", "1,50", "$2") without
floats (``parse_amount``).

Our own procedures (``fm.openmusic.payment.*``) are called the way any player calls them: the
listener's PDS mints a service-auth JWT for our service DID (``com.atproto.server.getServiceAuth``
through their OAuth session) and the call goes through the AppView's XRPC routes in-process
(``WebApp.api``), where the token is verified like any other. Cards go straight from the browser to
Stripe (Stripe.js; on the demo localstripe's stand-in): a SetupIntent saves the card
(``createCardSetup``, then ``confirmCardSetup`` in the page), and credit purchases and subscriptions
charge the saved PaymentMethod (3-D Secure, when asked for, finished with ``confirmCardPayment``).
Tips are ``fm.openmusic.payment.tip`` records in the listener's own repo; the broker settles them
and publishes a signed ``settlement`` record, which the tip's page shows once it is indexed.

Routes (signed in; every POST carries the CSRF token):
- ``GET /wallet``: credit and earnings, the subscription, the tiers, the card form.
- ``POST /wallet/card`` -> JSON ``{clientSecret}``: a SetupIntent for ``confirmCardSetup``.
- ``POST /wallet/credit`` (``amount`` in minor units, ``paymentMethod``) -> JSON ``{status, clientSecret}``.
- ``POST /wallet/subscribe`` (``tier``, ``paymentMethod``) -> JSON ``{status, clientSecret?}``.
- ``POST /wallet/cancel`` (form) -> 303 to ``/wallet``.
- ``GET /wallet/balance`` -> JSON, ``fm.openmusic.payment.getBalance``.
- ``POST /tip`` (form: ``subject`` DID, ``track`` AT-URI or empty, ``amount`` as typed, ``message``,
  ``key``: the record key the form was rendered with, a TID) -> 303 to ``/tip/{rkey}``. The same form
  sent twice finds its tip under that key and writes nothing more: a double click tips once.
- ``GET /tip/{rkey}``: the viewer's tip and its settlement: settling (the page refreshes itself),
  settled, or rejected with the reason.
JSON endpoints answer errors XRPC-style, ``{"error", "message"}``, with the upstream status."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from babel.dates import format_date
from babel.numbers import format_currency, get_currency_precision, get_decimal_symbol
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from appview.payment_queries import PAYMENT_QUERIES
from appview.xrpc import XrpcError, validate_params
from core.identity import valid_did
from core.lexicons import TIP
from core.publish import now_iso
from core.tid import is_tid
from web import csrf
from web.errors import PageError
from web.i18n import current_locale
from web.oauth.client import PdsError, SessionEnded, UserSession
from web.paths import login_href
from web.settings import STRIPE_JS_URL

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
NS = "fm.openmusic.payment."
#: Credit a listener may buy at once, minor units (``createCreditPurchase``'s lexicon bounds).
CREDIT_MIN, CREDIT_MAX = 100, 100_000
#: Amounts offered on the wallet page, minor units.
CREDIT_CHOICES = (500, 1000, 2000)
#: Seconds ``GET /tip/{rkey}`` keeps refreshing itself while the tip settles.
TIP_REFRESH_S = 2
#: Stripe's own origins beside Stripe.js (its API and 3-D Secure frames), for the wallet's CSP.
STRIPE_ORIGINS = "https://api.stripe.com https://js.stripe.com https://hooks.stripe.com"
AMOUNT = re.compile(r"^\s*[$€£]?\s*([0-9]{1,9})(?:[.,]([0-9]{1,3}))?\s*(?:[$€£]|[A-Za-z]{3})?\s*$")


class ApiError(Exception):
    """An XRPC error from one of our procedures: ``status`` (HTTP), ``error`` (name), message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def minor_digits(currency: str) -> int:
    """Digits after the decimal point of ``currency`` (ISO 4217): 2 for USD, 0 for JPY."""
    return get_currency_precision(currency)


def parse_amount(text: str, currency: str) -> int:
    """What a person typed ("2", "1.50", "1,50", "$3") as minor units of ``currency``. Either ``.`` or
    ``,`` is the decimal mark (no thousands separators: tips and credit are small). Raises
    ``ValueError`` for anything else, or for more decimals than the currency has."""
    match = AMOUNT.match(text or "")
    if not match:
        raise ValueError(text)
    major, fraction = match.group(1), match.group(2) or ""
    digits = minor_digits(currency)
    if len(fraction) > digits:
        raise ValueError(text)
    return int(major) * 10 ** digits + int(fraction.ljust(digits, "0") or 0)


def format_money(minor: int | None, currency: str) -> str:
    """Minor units as money in the current request's language ("$1.50", "1,50 US$"). Exact: Decimal."""
    if minor is None:
        return ""
    value = Decimal(int(minor)).scaleb(-minor_digits(currency))
    return format_currency(value, currency, locale=current_locale.get())


def amount_input(minor: int, digits: int) -> str:
    """Minor units as a form field's value, with the current language's decimal mark ("0.10", "0,10");
    ``parse_amount`` reads either."""
    text = str(Decimal(int(minor)).scaleb(-digits))
    return text.replace(".", get_decimal_symbol(current_locale.get()))


def format_day(iso: str | None) -> str:
    """An RFC 3339 datetime as a date in the current request's language ("Dec 29, 2026"); "" for None."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return format_date(when.date(), format="medium", locale=current_locale.get())


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Money:
    """The wallet and tip endpoints over a started ``WebApp`` (with views) and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web = web
        self.pages = pages
        s = web.settings
        self.currency = s.currency.upper()
        self.enabled = s.payments_enabled
        self.js_url, self.publishable_key = self._stripe_js()
        digits = minor_digits(self.currency)
        web.templates.filters.update(money=lambda minor, currency=None: format_money(minor, currency or self.currency),
                                     amount_input=lambda minor: amount_input(minor, digits),
                                     day=format_day)
        web.templates.globals.update(tips={"currency": self.currency, "min_artist": s.tip_min_artist,
                                           "min_track": s.tip_min_track} if self.enabled else None)
        csp = web.page_headers["Content-Security-Policy"]
        stripe_origins = origin(self.js_url) if s.stripe_api_base else STRIPE_ORIGINS
        self.wallet_headers = dict(web.page_headers)
        self.wallet_headers["Content-Security-Policy"] = (
            f"{csp}; script-src 'self' {stripe_origins}; connect-src 'self' {stripe_origins}; "
            f"frame-src {stripe_origins}")

    def _stripe_js(self) -> tuple[str, str]:
        """(Stripe.js URL, publishable key): localstripe's stand-in and a test key when the Stripe API
        base is another server, else Stripe's own and the configured key (empty: no card form)."""
        s, w = self.web.settings, self.web.web
        if s.stripe_api_base:
            return (w.stripe_js_url or f"{s.stripe_api_base.rstrip('/')}/js.stripe.com/v3/",
                    w.stripe_publishable_key or "pk_test_openmusic")
        return w.stripe_js_url or STRIPE_JS_URL, w.stripe_publishable_key

    def routes(self) -> list[BaseRoute]:
        """The routes, beside the catalog pages' (``web.app.routes``)."""
        return [
            Route("/wallet", self.wallet, methods=["GET"]),
            Route("/wallet/balance", self.balance, methods=["GET"]),
            Route("/wallet/card", self.card, methods=["POST"]),
            Route("/wallet/credit", self.credit, methods=["POST"]),
            Route("/wallet/subscribe", self.subscribe, methods=["POST"]),
            Route("/wallet/cancel", self.cancel, methods=["POST"]),
            Route("/tip", self.tip, methods=["POST"]),
            Route("/tip/{rkey}", self.tip_status, methods=["GET"]),
        ]

    # -- calling our procedures as the user ---------------------------------------------------------
    async def call(self, user: UserSession, nsid: str, body: dict[str, Any] | None = None,
                   auth: bool = True, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call ``nsid`` (a query with ``params`` and without ``body``, else a procedure) as ``user``,
        with a service-auth JWT their PDS mints. Raises ``ApiError`` (our XRPC error, or 503 when
        payments are off), ``SessionEnded`` and ``PdsError`` (the PDS would not mint the token)."""
        if not self.enabled or self.web.api is None:
            raise ApiError(503, "PaymentsDisabled", "payments are not configured on this server")
        headers = {}
        if auth:
            headers["authorization"] = "Bearer " + await user.service_auth(self.web.settings.service_did_resolved, nsid)
        if body is None:
            resp = await self.web.api.get(f"/xrpc/{nsid}", headers=headers,
                                          params={k: v for k, v in (params or {}).items() if v not in (None, "")})
        else:
            resp = await self.web.api.post(f"/xrpc/{nsid}", json=body, headers=headers)
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code != 200:
            raise ApiError(resp.status_code, str(data.get("error") or "InternalServerError"),
                           str(data.get("message") or "the server could not do this"))
        return data

    async def _json(self, request: Request, work) -> Response:
        """Run ``work(user, form)`` for a signed-in, CSRF-checked form; its dict as JSON, errors XRPC-style."""
        try:
            user, form = await self.pages._signed_in_form(request)
            return JSONResponse(await work(user, form))
        except PageError as exc:
            name = {401: "AuthRequired", 403: "InvalidCsrfToken", 413: "PayloadTooLarge"}.get(exc.status, "InvalidRequest")
            return JSONResponse({"error": name, "message": exc.message}, status_code=exc.status)
        except ApiError as exc:
            return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status)
        except SessionEnded:
            return JSONResponse({"error": "AuthRequired", "message": "your session ended: sign in again"},
                                status_code=401)
        except PdsError as exc:
            log.warning("service auth for a payment failed: %s", exc)
            return JSONResponse({"error": "UpstreamFailure", "message": "your PDS would not vouch for this call "
                                 "(getServiceAuth failed); try again"}, status_code=502)

    # -- wallet ------------------------------------------------------------------------------------
    async def wallet(self, request: Request) -> Response:
        """GET /wallet: the signed-in person's money."""
        user, token = await self.pages.viewer(request)
        if user is None:
            return RedirectResponse(login_href(), status_code=303)
        problem = None
        balance = subscription = None
        tiers: list[dict[str, Any]] = []
        try:
            balance, subscription, tier_list = await asyncio.gather(
                self.call(user, NS + "getBalance"), self.call(user, NS + "getSubscription"),
                self.call(user, NS + "getTiers", auth=False))
            tiers = [t for t in tier_list.get("tiers", []) if t.get("paid")]
        except ApiError as exc:
            problem = exc.message
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PdsError as exc:
            log.warning("wallet of %s: %s", user.did, exc)
            problem = self.web.templates.gettext("Your PDS would not vouch for this request; reload the page to try again.")
        names = {t["id"]: t["name"] for t in tiers}
        try:
            sent = (await PAYMENT_QUERIES[NS + "getTips"](self.web.views, validate_params(
                NS + "getTips", [("payer", user.did), ("limit", "10")])))["tips"]
        except XrpcError:  # an account we have not indexed yet has sent nothing we know of
            sent = []
        html = self.web.templates.environment().get_template("wallet.html").render(
            lang=current_locale.get(), user=user, csrf_field=csrf.FIELD, csrf_token=token, balance=balance,
            subscription=subscription, tiers=tiers, tier_names=names, problem=problem, sent=sent,
            enabled=self.enabled and problem is None, card_ready=bool(self.publishable_key),
            stripe_js=self.js_url, stripe_key=self.publishable_key, choices=CREDIT_CHOICES,
            currency=self.currency, test_mode=bool(self.web.settings.stripe_api_base),
            request_note=next((k for k in ("cancelled", "paid", "subscribed") if request.query_params.get(k) == "1"), None))
        return HTMLResponse(html, status_code=200 if problem is None else 503, headers=self.wallet_headers)

    async def balance(self, request: Request) -> Response:
        """GET /wallet/balance: ``getBalance`` as JSON (the wallet page polls it after a payment)."""
        user, _ = await self.pages.viewer(request)
        if user is None:
            return JSONResponse({"error": "AuthRequired", "message": "sign in"}, status_code=401)
        try:
            return JSONResponse(await self.call(user, NS + "getBalance"), headers={"Cache-Control": "no-store"})
        except ApiError as exc:
            return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status)
        except (SessionEnded, PdsError):
            return JSONResponse({"error": "AuthRequired", "message": "sign in again"}, status_code=401)

    async def card(self, request: Request) -> Response:
        """POST /wallet/card: a SetupIntent's client secret, to save a card with Stripe.js."""
        async def work(user: UserSession, form: dict[str, str]) -> dict[str, Any]:
            return await self.call(user, NS + "createCardSetup", {})
        return await self._json(request, work)

    async def credit(self, request: Request) -> Response:
        """POST /wallet/credit: buy ``amount`` minor units of credit with a saved ``paymentMethod``."""
        async def work(user: UserSession, form: dict[str, str]) -> dict[str, Any]:
            amount = form.get("amount", "")
            if not amount.isdigit() or not CREDIT_MIN <= int(amount) <= CREDIT_MAX:
                raise PageError(400, "Bad amount", f"buy between {CREDIT_MIN} and {CREDIT_MAX} minor units")
            out = await self.call(user, NS + "createCreditPurchase",
                                  {"amount": int(amount), "currency": self.currency,
                                   "paymentMethod": form.get("paymentMethod", "")})
            return {k: out.get(k) for k in ("status", "clientSecret", "paymentIntent", "amount", "currency")}
        return await self._json(request, work)

    async def subscribe(self, request: Request) -> Response:
        """POST /wallet/subscribe: subscribe to ``tier``, charging a saved ``paymentMethod``."""
        async def work(user: UserSession, form: dict[str, str]) -> dict[str, Any]:
            return await self.call(user, NS + "createSubscription",
                                   {"tier": form.get("tier", ""), "paymentMethod": form.get("paymentMethod", "")})
        return await self._json(request, work)

    async def cancel(self, request: Request) -> Response:
        """POST /wallet/cancel (form): cancel the subscription at the end of the paid period."""
        user: UserSession | None = None
        try:
            user, form = await self.pages._signed_in_form(request)
            await self.call(user, NS + "cancelSubscription", {"atPeriodEnd": form.get("now") != "1"})
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except ApiError as exc:
            return self.web.error_page(exc.status, self.web.templates.gettext("Not cancelled"), exc.message, user=user)
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PdsError:
            return self.web.error_page(502, self.web.templates.gettext("Not cancelled"), self.web.templates.gettext(
                "Your PDS would not vouch for this request; try again."), user=user)
        return RedirectResponse("/wallet?cancelled=1", status_code=303)

    # -- tips --------------------------------------------------------------------------------------
    async def settlement(self, tip_uri: str) -> dict[str, Any] | None:
        """The verified settlement view of ``tip_uri`` (``fm.openmusic.payment.getSettlement``), or None
        while there is none. Raises ``XrpcError`` for anything but NotFound."""
        nsid = NS + "getSettlement"
        try:
            return (await PAYMENT_QUERIES[nsid](self.web.views, validate_params(nsid, [("uri", tip_uri)])))["settlement"]
        except XrpcError as exc:
            if exc.error == "NotFound":
                return None
            raise

    async def tip(self, request: Request) -> Response:
        """POST /tip: write the viewer's ``fm.openmusic.payment.tip`` to their PDS, then its page."""
        user: UserSession | None = None
        _ = self.web.templates.gettext
        try:
            user, form = await self.pages._signed_in_form(request)
            if not self.enabled:
                raise PageError(503, _("Tips are off"), _("Payments are not configured on this server."))
            subject, track_uri = form.get("subject", ""), form.get("track", "")
            if not valid_did(subject):
                raise PageError(400, _("Cannot tip"), _("This tip names no artist."))
            if subject == user.did:
                raise PageError(400, _("Cannot tip"), _("You cannot tip yourself."))
            record: dict[str, Any] = {"$type": TIP, "subject": subject}
            if track_uri:
                track = (await self.pages.query("fm.openmusic.catalog.getTrack", uri=track_uri))["track"]
                if track["artist"]["did"] != subject:
                    raise PageError(400, _("Cannot tip"), _("This track is not by this artist."))
                record["track"] = {"uri": track["uri"], "cid": track["cid"]}
            else:
                await self.pages.query("fm.openmusic.actor.getProfile", actor=subject)
            try:
                amount = parse_amount(form.get("amount", ""), self.currency)
            except ValueError:
                raise PageError(400, _("Cannot tip"), _("Type the amount as a number, like 1.50.")) from None
            s = self.web.settings
            least = s.tip_min_track if track_uri else s.tip_min_artist
            if amount < least:
                raise PageError(400, _("Cannot tip"), _("The smallest tip is %(least)s.") % {
                    "least": format_money(least, self.currency)})
            if amount > s.tip_max:
                raise PageError(400, _("Cannot tip"), _("The largest tip is %(most)s.") % {
                    "most": format_money(s.tip_max, self.currency)})
            message = form.get("message", "").strip()
            if message:
                record["message"] = message[:3000]
            record |= {"amount": amount, "currency": self.currency, "createdAt": now_iso()}
            key = form.get("key", "")
            if key and not is_tid(key):
                raise PageError(400, _("Cannot tip"), _("This form is damaged; reload the page."))
            created = await user.create_record_once(TIP, record, key or None)  # a form sent twice tips once
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PdsError as exc:
            log.warning("writing a tip for %s failed: %s", user.did if user else "?", exc)
            return self.web.error_page(502, _("Tip not sent"), _("Your PDS refused the tip: %(why)s") % {
                "why": str(exc)[:300]}, user=user)
        rkey = str(created.get("uri", "")).rsplit("/", 1)[-1]
        return RedirectResponse(f"/tip/{rkey}", status_code=303)

    async def tip_status(self, request: Request) -> Response:
        """GET /tip/{rkey}: the viewer's tip (from their repo) and its settlement (from our index)."""
        user, _token = await self.pages.viewer(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        rkey = request.path_params["rkey"]
        _ = self.web.templates.gettext
        if not re.fullmatch(r"[a-z2-7]{13}", rkey):
            return self.web.error_page(404, _("Not found"), _("There is no such tip."), user=user)
        uri = f"at://{user.did}/{TIP}/{rkey}"
        try:
            got = await user.call("GET", "com.atproto.repo.getRecord",
                                  params={"repo": user.did, "collection": TIP, "rkey": rkey})
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PdsError:
            return self.web.error_page(404, _("Not found"), _("Your repo holds no such tip."), user=user)
        tip = got.get("value") or {}
        try:
            settlement = await self.settlement(uri)
        except XrpcError as exc:
            return self.web.error_page(exc.status, _("Cannot show this"), exc.message, user=user)
        artist = None
        try:
            artist = (await self.pages.query("fm.openmusic.actor.getProfile", actor=tip.get("subject", "")))
        except PageError:
            pass
        track = None
        if isinstance(tip.get("track"), dict):
            try:
                track = (await self.pages.query("fm.openmusic.catalog.getTrack", uri=tip["track"].get("uri", "")))["track"]
            except PageError:
                pass
        headers = None if settlement else {"Refresh": str(TIP_REFRESH_S)}
        resp = await self.pages.page(request, "tip.html", uri=uri, tip=tip, settlement=settlement,
                                     artist=artist, track=track, refresh=TIP_REFRESH_S)
        if headers:
            resp.headers.update(headers)
        return resp


__all__ = ["ApiError", "Money", "format_money", "parse_amount"]
