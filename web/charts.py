"""The charts page: ``GET /charts`` shows ``fm.openmusic.feed.getChart`` (``chart`` = trending, top,
new or tipped; ``period`` for top and tipped; filters ``genre``, ``mood``, ``aiLevel``; ``cursor``)
with the facets of ``catalog.getBrowse`` to filter by. A plain GET form, no script needed; the
handlers are the AppView's own (skeleton -> hydration there, presentation here). Tipped charts
count the AppView's currency (``Settings.currency``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from web.errors import PageError
from web.pages import PAGE_SIZE

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

CHARTS = ("trending", "top", "new", "tipped")
PERIODS = ("day", "week", "month", "all")
AI_LEVELS = ("human", "assisted", "generated")
#: Facet values offered in each filter's list.
FACETS_SHOWN = 20


class ChartsPage:
    """``GET /charts`` over the catalog pages' ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web, self.pages = web, pages

    def routes(self) -> list[BaseRoute]:
        return [Route("/charts", self.charts, methods=["GET"])]

    async def charts(self, request: Request) -> Response:
        """GET /charts (module docstring). Unknown choices are a 400 page saying which."""
        q = request.query_params
        chosen = {"chart": q.get("chart") or "trending", "period": q.get("period") or "week",
                  "genre": q.get("genre", "").strip(), "mood": q.get("mood", "").strip(),
                  "aiLevel": q.get("aiLevel", "")}

        async def build() -> Response:
            _ = self.web.templates.gettext
            if chosen["chart"] not in CHARTS or chosen["period"] not in PERIODS or \
                    (chosen["aiLevel"] and chosen["aiLevel"] not in AI_LEVELS):
                raise PageError(400, _("Not a chart"), _("Choose a chart, a period and an AI level from the lists."))
            params: dict[str, Any] = {**chosen, "limit": PAGE_SIZE, "cursor": q.get("cursor")}
            if chosen["chart"] == "tipped":
                params["currency"] = self.web.settings.currency.upper()
            got = await self.pages.query("fm.openmusic.feed.getChart", **params)
            facets = await self.pages.query("fm.openmusic.catalog.getBrowse")
            keep = {k: v for k, v in chosen.items() if v}
            return await self.pages.page(request, "charts.html", tracks=got["tracks"], cursor=got.get("cursor"),
                                         chosen=chosen, keep=keep, charts=CHARTS, periods=PERIODS,
                                         ai_levels=AI_LEVELS, genres=facets["genres"][:FACETS_SHOWN],
                                         moods=facets["moods"][:FACETS_SHOWN], paged=bool(q.get("cursor")))
        return await self.pages.guarded(request, build)


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The charts page's route."""
    return ChartsPage(web, pages).routes()
