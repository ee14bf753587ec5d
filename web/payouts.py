"""An artist's earnings statement and payouts in the web app, from ``fm.openmusic.payment.getEarnings``
and ``createPayoutAccountLink`` called as the user (``web.money.Money.call``: a service-auth JWT
their PDS mints):

- ``GET /wallet/earnings`` (``period`` YYYY-MM, optional; ``cursor``): what was earned, by source
  (subscriptions, ads, tips), what is not paid out yet, and every earning line: each subscriber's
  share down to the track and the seconds heard, the ad pool's, each tip, each payout (with the
  signed payout record's AT-URI, which anyone can verify) and the earnings each payout covered.
  A manager (both sides agree) sees each managed artist's totals and may open their statement
  (``artist`` = their DID).
- ``POST /wallet/payouts/setup``: start or resume Stripe Connect onboarding (an Express account) and
  go there; Stripe sends the person back to ``/wallet/earnings?onboarded=1``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from core.identity import valid_did
from web import csrf
from web.errors import PageError
from web.money import NS, ApiError
from web.oauth.client import PdsError, SessionEnded
from web.paths import login_href
from web.studio_form import bps_to_percent

if TYPE_CHECKING:
    from web.money import Money

log = logging.getLogger("openmusic.web")
#: Earning lines per page of the statement.
LINES_PER_PAGE = 100
PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass
class PeriodLines:
    """The statement's lines of one accounting period (a UTC month), newest period first."""

    period: str
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Earned in the period (payouts left out), minor units."""
        return sum(ln["amount"] for ln in self.lines if ln["kind"] != "payout")


def by_period(lines: list[dict[str, Any]]) -> list[PeriodLines]:
    """``getEarnings`` lines grouped by ``period``, in the order they came."""
    out: dict[str, PeriodLines] = {}
    for line in lines:
        out.setdefault(line.get("period", ""), PeriodLines(line.get("period", ""))).lines.append(line)
    return list(out.values())


class Payouts:
    """The statement and payout onboarding (module docstring), over the wallet's ``Money``."""

    def __init__(self, money: Money) -> None:
        self.money = money
        self.web = money.web
        self.pages = money.pages
        self.web.templates.filters.update(bps=bps_to_percent)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/wallet/earnings", self.statement, methods=["GET"]),
            Route("/wallet/payouts/setup", self.setup, methods=["POST"]),
        ]

    async def statement(self, request: Request) -> Response:
        """GET /wallet/earnings (module docstring)."""
        _ = self.web.templates.gettext
        user, token = await self.pages.viewer(request)
        if user is None:
            return RedirectResponse(login_href(), status_code=303)
        q = request.query_params
        period, artist, cursor = q.get("period", ""), q.get("artist", ""), q.get("cursor", "")
        if period and not PERIOD.match(period):
            return self.web.error_page(400, _("Not a month"), _("The period is a month, YYYY-MM, such as 2026-11."),
                                       user=user)
        if artist and not valid_did(artist):
            return self.web.error_page(400, _("Not an account"), _("The artist is given by their DID."), user=user)
        try:
            view = await self.money.call(user, NS + "getEarnings", params={
                "period": period, "artist": artist, "cursor": cursor, "limit": LINES_PER_PAGE})
        except ApiError as exc:
            if exc.error == "NotManager":
                return self.web.error_page(403, _("Not your artist"), _(
                    "You may see an artist's earnings only when you manage them and they name you as their "
                    "manager."), user=user)
            if exc.status == 400:
                return self.web.error_page(400, _("Cannot show this"), exc.message, user=user)
            return self.web.error_page(503 if exc.status == 503 else 502, _("Earnings unavailable"), exc.message,
                                       user=user)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except PdsError as exc:
            log.warning("earnings of %s: %s", user.did, exc)
            return self.web.error_page(502, _("Earnings unavailable"), _(
                "Your PDS would not vouch for this request; reload the page to try again."), user=user)
        tippers = [ln["source"].removeprefix("at://").split("/")[0] for ln in view.get("lines", [])
                   if ln.get("kind") == "tip" and str(ln.get("source", "")).startswith("at://did:")]
        dids = [view["artist"], *(m.get("artist") for m in view.get("managed") or []), *tippers]
        tracks = [ln["track"] for ln in view.get("lines", []) if ln.get("track")]
        names = await self.names([d for d in dids if isinstance(d, str)], tracks)
        return self.web.render("earnings.html", user=user, csrf_field=csrf.FIELD, csrf_token=token, view=view,
                               periods=by_period(view.get("lines", [])), period=period, names=names,
                               own=view["artist"] == user.did, onboarded=q.get("onboarded") == "1",
                               more=view.get("cursor"), artist=artist,
                               threshold=self.web.settings.payout_threshold)

    async def names(self, dids: list[str], tracks: list[str]) -> dict[str, str]:
        """DIDs and track AT-URIs -> what the page calls them (display name or handle; title)."""
        from appview.views import artist_views, track_views

        out: dict[str, str] = {}
        for did, view in (await artist_views(self.web.views, dids)).items():
            out[did] = view.get("displayName") or view.get("handle") or did
        unique = list(dict.fromkeys(tracks))
        for i in range(0, len(unique), 100):
            for uri, view in (await track_views(self.web.views, unique[i:i + 100])).items():
                out[uri] = view.get("title") or uri
        return out

    async def setup(self, request: Request) -> Response:
        """POST /wallet/payouts/setup: ``createPayoutAccountLink`` and off to Stripe's onboarding (303)."""
        _ = self.web.templates.gettext
        user = None
        try:
            user, _form = await self.pages._signed_in_form(request)
            base = self.web.settings.base_url
            link = await self.money.call(user, NS + "createPayoutAccountLink", {
                "returnUrl": f"{base}/wallet/earnings?onboarded=1", "refreshUrl": f"{base}/wallet/earnings"})
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse(login_href(), status_code=303)
        except ApiError as exc:
            return self.web.error_page(503 if exc.status == 503 else 502, _("Payouts not set up"), exc.message,
                                       user=user)
        except PdsError as exc:
            log.warning("payout onboarding of %s: %s", user.did if user else "?", exc)
            return self.web.error_page(502, _("Payouts not set up"), _(
                "Your PDS would not vouch for this request; reload the page to try again."), user=user)
        url = str(link.get("url", ""))
        if not url.startswith(("https://", "http://")):
            return self.web.error_page(502, _("Payouts not set up"), _("Stripe gave no address to go to."), user=user)
        return RedirectResponse(url, status_code=303)
