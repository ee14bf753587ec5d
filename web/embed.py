"""Sharing: the embeddable player and oEmbed (https://oembed.com), and what the pages' OpenGraph and
Twitter-card tags need.

- ``GET /embed/track/{did}/{rkey}``: a small page with the track's artwork, title, artist and an
  audio player, made to sit in another site's ``<iframe>`` (its CSP allows any ``frame-ancestors``;
  every other page refuses framing). Nothing personal is on it and no play is recorded from it
  (the browser sends no session cookie to a third-party frame).
- ``GET /oembed?url=<a track page's URL>&format=json&maxwidth=&maxheight=``: the oEmbed "rich"
  answer whose ``html`` is that iframe. ``format=xml``: 501, as the oEmbed spec says for a format a
  provider does not serve; a URL that is not one of our track pages: 404; bad parameters: 400.
Track pages name the oEmbed URL in a ``<link rel="alternate" type="application/json+oembed">``."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from web.errors import PageError
from web.i18n import current_locale

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

#: The embedded player's size, CSS pixels (oEmbed ``width``/``height`` unless ``maxwidth``/``maxheight`` are smaller).
EMBED_WIDTH, EMBED_HEIGHT = 480, 152
TRACK_PATH = re.compile(r"^/track/(did:[a-z]+:[A-Za-z0-9._:%-]{1,2000})/([A-Za-z0-9._:~-]{1,512})$")


class Embeds:
    """The embed and oEmbed endpoints over a started ``WebApp`` (with views) and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web = web
        self.pages = pages
        self.site = web.settings.base_url.rstrip("/")
        #: Origins whose track pages are ours: the public URL, and on loopback its 127.0.0.1 / localhost twin
        #: (the OAuth loopback client browses on 127.0.0.1 while did:web needs localhost).
        self.sites = {self.site, self.site.replace("://localhost:", "://127.0.0.1:"),
                      self.site.replace("://127.0.0.1:", "://localhost:")}
        web.templates.globals.update(site_url=self.site, oembed_url=self.oembed_url)
        self.embed_headers = {k: v for k, v in web.page_headers.items() if k != "X-Frame-Options"}
        self.embed_headers["Content-Security-Policy"] = web.page_headers["Content-Security-Policy"].replace(
            "frame-ancestors 'none'", "frame-ancestors *")
        self.embed_headers["Cache-Control"] = "public, max-age=300"

    def routes(self) -> list[BaseRoute]:
        """The routes, beside the catalog pages' (``web.app.routes``)."""
        return [Route("/embed/track/{did}/{rkey}", self.embed_track, methods=["GET"]),
                Route("/oembed", self.oembed, methods=["GET"])]

    def oembed_url(self, page_path: str) -> str:
        """The oEmbed endpoint's URL for one of our pages (its path, e.g. ``/track/did/rkey``)."""
        return f"{self.site}/oembed?format=json&url={quote(self.site + page_path, safe='')}"

    async def embed_track(self, request: Request) -> Response:
        """GET /embed/track/{did}/{rkey}: the embeddable player."""
        did, rkey = request.path_params["did"], request.path_params["rkey"]
        try:
            track = (await self.pages.query("fm.openmusic.catalog.getTrack",
                                            uri=f"at://{did}/fm.openmusic.catalog.track/{rkey}"))["track"]
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message)
        page = self.web.templates.environment().get_template("embed.html").render(
            lang=current_locale.get(), track=track, site=self.site)
        return HTMLResponse(page, headers=self.embed_headers)

    async def oembed(self, request: Request) -> Response:
        """GET /oembed: the oEmbed answer for a track page's URL (module docstring)."""
        q = request.query_params
        fmt = q.get("format", "json")
        if fmt == "xml":
            return _error(501, "NotImplemented", "only format=json is served")
        if fmt != "json":
            return _error(400, "InvalidRequest", "format must be json")
        try:
            max_w = int(q.get("maxwidth", EMBED_WIDTH))
            max_h = int(q.get("maxheight", EMBED_HEIGHT))
        except ValueError:
            return _error(400, "InvalidRequest", "maxwidth and maxheight must be integers")
        if max_w < 1 or max_h < 1:
            return _error(400, "InvalidRequest", "maxwidth and maxheight must be positive")
        url = q.get("url", "")
        parts = urlsplit(url)
        match = TRACK_PATH.match(parts.path)
        if f"{parts.scheme}://{parts.netloc}" not in self.sites or not match:
            return _error(404, "NotFound", "url must be a track page on this site")
        did, rkey = match.groups()
        try:
            track = (await self.pages.query("fm.openmusic.catalog.getTrack",
                                            uri=f"at://{did}/fm.openmusic.catalog.track/{rkey}"))["track"]
        except PageError as exc:
            return _error(exc.status, "NotFound" if exc.status == 404 else "InvalidRequest", exc.message)
        width, height = min(EMBED_WIDTH, max_w), min(EMBED_HEIGHT, max_h)
        artist = track["artist"]
        src = f"{self.site}/embed/track/{did}/{rkey}"
        title = html.escape(track["title"], quote=True)
        body = {
            "version": "1.0", "type": "rich", "provider_name": "Open Music", "provider_url": self.site,
            "title": track["title"], "author_name": artist.get("displayName") or artist["handle"],
            "author_url": f"{self.site}/artist/{artist['handle'] if artist['handle'] != 'handle.invalid' else artist['did']}",
            "width": width, "height": height, "cache_age": 300,
            "html": f'<iframe src="{html.escape(src, quote=True)}" width="{width}" height="{height}" '
                    f'title="{title}" frameborder="0" loading="lazy" allow="autoplay; encrypted-media"></iframe>',
        }
        if track.get("artworkUrl"):
            body |= {"thumbnail_url": track["artworkUrl"], "thumbnail_width": 240, "thumbnail_height": 240}
        return JSONResponse(body, headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


__all__ = ["EMBED_HEIGHT", "EMBED_WIDTH", "Embeds"]
