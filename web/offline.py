"""Installable and offline: the web app manifest, the service worker and the offline page.

- ``GET /sw.js``: ``static/sw.js`` served from the root so its scope is the whole site (no
  ``Service-Worker-Allowed`` needed), ``Cache-Control: no-cache`` so a new version is seen at once.
  The pages' CSP (``default-src 'self'``) lets it register: ``worker-src`` falls back to it.
- ``GET /manifest.webmanifest``: name, ``start_url`` ``/``, ``display: standalone``, icons
  (``static/icons/``), colours of ``web.css`` (the browser's light canvas).
- ``GET /favicon.ico``: the 192 px icon, for browsers that ask before reading the page's links.
- ``GET /offline``: the page the worker answers with when a page is not saved and the network is
  gone; it lists what was saved for offline listening (``static/offline.js``).

What is cached and when: ``static/sw.js``. Saving a track checks its audio against the blob's CID in
the browser (``static/ids.js``); plays heard offline are kept and sent later (``static/player.js``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from web import csrf
from web.i18n import current_locale

if TYPE_CHECKING:
    from web.app import WebApp

STATIC = Path(__file__).resolve().parent / "static"
#: The browser's light canvas and text, which ``web.css`` (``color-scheme: light dark``) is drawn on.
THEME_COLOR = "#ffffff"
BACKGROUND_COLOR = "#ffffff"
ICONS = [
    {"src": "/static/web/icons/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
    {"src": "/static/web/icons/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
    {"src": "/static/web/icons/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"},
    {"src": "/static/web/icons/icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
]


class Offline:
    """The endpoints, over a ``WebApp`` (started before serving)."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        media = "{0.scheme}://{0.netloc}".format(urlsplit(web.settings.base_url))
        #: The worker fetches our pages and, for media it has not saved, the AppView's public origin.
        self.worker_headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                               "Content-Security-Policy": f"default-src 'self'; connect-src 'self' {media}"}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/sw.js", self.service_worker, methods=["GET"]),
            Route("/manifest.webmanifest", self.manifest, methods=["GET"]),
            Route("/offline", self.offline_page, methods=["GET"]),
            Route("/favicon.ico", self.favicon, methods=["GET"]),
        ]

    async def favicon(self, request: Request) -> Response:
        """GET /favicon.ico: the app's icon (a PNG, which browsers take under this name too)."""
        return FileResponse(STATIC / "icons" / "icon-192.png", media_type="image/png",
                            headers={"Cache-Control": "public, max-age=86400"})

    async def service_worker(self, request: Request) -> Response:
        """GET /sw.js: the service worker's script."""
        return FileResponse(STATIC / "sw.js", media_type="text/javascript; charset=utf-8",
                            headers=self.worker_headers)

    async def manifest(self, request: Request) -> Response:
        """GET /manifest.webmanifest: the web app manifest, in the request's language."""
        _ = self.web.templates.gettext
        body = {
            "name": "Open Music", "short_name": "Open Music", "lang": current_locale.get(),
            "description": _("Music from artists' own PDSes: listen, like and save tracks for offline listening."),
            "id": "/", "start_url": "/", "scope": "/", "display": "standalone",
            "theme_color": THEME_COLOR, "background_color": BACKGROUND_COLOR, "icons": ICONS,
        }
        return JSONResponse(body, media_type="application/manifest+json",
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def offline_page(self, request: Request) -> Response:
        """GET /offline: what was saved for offline listening (listed by the browser)."""
        user = await self.web.user_session(request.cookies.get("om_session"))
        token = None
        if user is not None:
            assert self.web.sealer is not None
            token = csrf.token(self.web.sealer.csrf_key, f"session:{user.key}")
        return self.web.render("offline.html", user=user, csrf_field=csrf.FIELD, csrf_token=token)


def routes(web: WebApp) -> list[BaseRoute]:
    """``/sw.js``, ``/manifest.webmanifest``, ``/offline`` and ``/favicon.ico``, to put beside ``web.app.routes``."""
    return Offline(web).routes()


__all__ = ["Offline", "routes"]
