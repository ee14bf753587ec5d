"""The web app's sign-in pages (Starlette + Jinja2, rendered on the server, no scripts).

``WebApp`` holds what the pages need (settings, the database connection, the OAuth client) and
is started and stopped by whoever serves it: ``create_web_app`` for a stand-alone app, or the
composition root, which mounts ``routes(web)`` beside the AppView's and calls ``start``/``stop``.

Routes: ``GET/POST /login``, ``GET /oauth/callback``, ``POST /logout``, ``GET /me``,
``GET /oauth/client-metadata.json``, ``GET /oauth/jwks.json``, ``/static/web/*``.

Cookies (all HttpOnly, SameSite=Lax, Secure unless the public URL is loopback http):
``om_session`` (the session: an opaque random ID), ``om_csrf`` (anonymous CSRF binding for the
sign-in form), ``om_oauth`` (binds a sign-in in flight to the browser that started it, 10 min).
Every POST carries a CSRF token (``web.csrf``); bad input gets a page saying what went wrong,
with a 4xx status, and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jinja2
from babel.numbers import format_decimal
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from appview.views import ViewContext
from core import db
from core.config import Settings
from core.identity import IdentityResolver
from web import csrf
from web.errors import PageError
from web.i18n import Languages, LocaleMiddleware, current_locale
from web.oauth.client import OAuthClient, SessionEnded, SignInError, UserSession, is_loopback_url
from web.oauth.http import guarded_client
from web.oauth.store import SessionStore, digest
from web.paths import local_path, login_href
from web.sealing import Sealer, load_keys
from web.settings import WebSettings

log = logging.getLogger("openmusic.web")
#: Paths whose answers ``CompressPages`` gzips (with ``/``): the pages and their static files.
COMPRESSED_PREFIXES = ("/static/web/", "/static/vendor/", "/search", "/track/", "/artist/", "/album/", "/listener/",
                       "/me", "/welcome", "/wallet", "/tip/", "/login", "/offline", "/embed/", "/sw.js",
                       "/manifest.webmanifest", "/studio", "/dashboard", "/charts", "/playlist",
                       "/notifications", "/lexicons")
#: Never gzipped, whatever else matches: the XRPC API and blobs.
UNCOMPRESSED_PREFIXES = ("/xrpc/", "/audio/", "/image/")
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "om_session"
ANON_COOKIE = "om_csrf"
BINDING_COOKIE = "om_oauth"
#: Headers on every page: no caching of personal pages, no framing, no referrer leaking codes.
#: Scripts only from our own origin (``/static/web``); audio and images also from the AppView's
#: public origin, which the views' URLs name (``{media}``).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: {media}; media-src 'self' {media}; "
                               "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class WebApp:
    """The web app's dependencies and endpoints. ``await start()`` before serving, ``await stop()`` after.

    ``transport``: an httpx transport under the SSRF guard (tests use a mock authorization server).
    ``views``: the AppView's ``ViewContext``; with it, the catalog pages and the listener's writes
    (``web.pages``) are served too."""

    def __init__(self, settings: Settings, web_settings: WebSettings | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None, views: ViewContext | None = None) -> None:
        self.settings = settings
        self.web = web_settings or WebSettings.from_env()
        self._transport = transport
        self.views = views
        self.secure_cookies = not is_loopback_url(settings.base_url)
        self.templates = Languages(jinja2.FileSystemLoader(HERE / "templates"),
                                   {"duration": format_duration, "number": format_number})
        self.templates.globals.update(login_href=login_href)
        media = "{0.scheme}://{0.netloc}".format(urlsplit(settings.base_url))
        self.page_headers = dict(PAGE_HEADERS)
        self.page_headers["Content-Security-Policy"] = PAGE_HEADERS["Content-Security-Policy"].format(media=media)
        self.conn = None
        self.http: httpx.AsyncClient | None = None
        self.sealer: Sealer | None = None
        self.store: SessionStore | None = None
        self.oauth: OAuthClient | None = None
        #: The AppView's own XRPC API, in-process (``attach_api``); None: money pages say payments are off.
        self.api: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Migrate the database, open a connection and the HTTP client, load the keys. Raises
        ``KeyConfigError`` / ``ClientConfigError`` on missing or bad secrets."""
        keys = load_keys(self.web.session_key, self.settings.allow_private_hosts, Path(self.settings.db_path).parent)
        self.sealer = Sealer(keys)
        await asyncio.to_thread(db.migrate, self.settings.database)
        self.conn = await db.connect(self.settings.database)
        self.http = guarded_client(self.settings.allow_private_hosts, self._transport)
        self.store = SessionStore(self.conn, self.sealer)
        try:
            self.oauth = OAuthClient(self.settings, self.web, self.store, self.http,
                                     IdentityResolver(self.settings, self.http))
        except Exception:
            await self.stop()
            raise

    def attach_api(self, app: ASGIApp) -> None:
        """Call the AppView's XRPC methods through ``app`` in-process (``web.money``): each request goes
        through the same routes, lexicon checks and service-auth verification as any other client's."""
        self.api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=self.settings.base_url,
                                     timeout=30)

    async def stop(self) -> None:
        """Close the HTTP clients and the database connection."""
        if self.api is not None:
            await self.api.aclose()
            self.api = None
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    # -- helpers -----------------------------------------------------------------------------------
    def render(self, name: str, status: int = 200, **context: object) -> HTMLResponse:
        html = self.templates.environment().get_template(name).render(lang=current_locale.get(), **context)
        return HTMLResponse(html, status_code=status, headers=self.page_headers)

    def error_page(self, status: int, title: str, message: str, user: UserSession | None = None) -> HTMLResponse:
        return self.render("error.html", status=status, title=title, message=message, user=user)

    def set_cookie(self, resp: Response, name: str, value: str, max_age: int) -> None:
        resp.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=self.secure_cookies)

    def drop_cookie(self, resp: Response, name: str) -> None:
        resp.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=self.secure_cookies)

    async def read_form(self, request: Request) -> dict[str, str]:
        """An urlencoded form body, at most ``max_form_bytes``. Raises ``PageError``."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise PageError(415, "Unsupported form", "Send this form from our page.")
        limit = self.web.max_form_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PageError(413, "Form too large", f"This form may carry at most {limit} bytes.")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PageError(413, "Form too large", f"This form may carry at most {limit} bytes.")
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20, strict_parsing=False)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PageError(400, "Unreadable form", "This form could not be read.") from exc
        return {k: v[0] for k, v in parsed.items()}

    async def current_user(self, request: Request) -> UserSession | None:
        assert self.oauth is not None
        return await self.oauth.session(request.cookies.get(SESSION_COOKIE))

    def _canonical_redirect(self, request: Request) -> Response | None:
        """The loopback client's redirect is on 127.0.0.1: a visit to ``localhost`` moves there first,
        so its cookies are the callback's."""
        assert self.oauth is not None
        if self.oauth.loopback and request.url.hostname == "localhost":
            query = f"?{request.url.query}" if request.url.query else ""
            return RedirectResponse(f"{self.oauth.base_url}{request.url.path}{query}", status_code=307)
        return None

    # -- endpoints ---------------------------------------------------------------------------------
    async def login_page(self, request: Request, *, status: int = 200, error: tuple[str, str] | None = None,
                         identifier: str = "") -> Response:
        """GET /login (``next``: a path on this site to come back to, default /me): the sign-in form
        (a signed-in visitor goes straight on)."""
        if (moved := self._canonical_redirect(request)) is not None:
            return moved
        next_url = local_path(request.query_params.get("next"), "/me")
        if error is None and await self.current_user(request) is not None:
            return RedirectResponse(next_url, status_code=303)
        assert self.sealer is not None
        anon = request.cookies.get(ANON_COOKIE)
        fresh = not anon or len(anon) > 64
        if fresh:
            anon = secrets.token_urlsafe(24)
        resp = self.render("login.html", status=status, error=error, identifier=identifier, next=next_url,
                           signed_out=request.query_params.get("signed_out") == "1",
                           csrf_field=csrf.FIELD, csrf_token=csrf.token(self.sealer.csrf_key, f"anon:{anon}"))
        if fresh:
            self.set_cookie(resp, ANON_COOKIE, anon, max_age=86400)
        return resp

    async def login_submit(self, request: Request) -> Response:
        """POST /login: check the form, send the PAR, redirect to the authorization page."""
        assert self.oauth is not None and self.sealer is not None
        try:
            form = await self.read_form(request)
        except PageError as exc:
            return self.error_page(exc.status, exc.title, exc.message)
        anon = request.cookies.get(ANON_COOKIE)
        if not csrf.check(self.sealer.csrf_key, f"anon:{anon}" if anon else None, form.get(csrf.FIELD)):
            return self.error_page(403, "Form expired", "This form was not sent from our sign-in page, or it "
                                   "expired. Open the sign-in page again.")
        identifier = form.get("identifier", "")
        binding = secrets.token_urlsafe(24)
        try:
            url = await self.oauth.authorize(identifier, binding, local_path(form.get("next"), "/me"))
        except SignInError as exc:
            return await self.login_page(request, status=exc.status, error=(exc.title, exc.message),
                                         identifier=identifier[:200])
        resp = RedirectResponse(url, status_code=303)
        self.set_cookie(resp, BINDING_COOKIE, binding, max_age=self.web.auth_request_ttl_s)
        return resp

    async def callback(self, request: Request) -> Response:
        """GET /oauth/callback: finish signing in; a session cookie and /me, or an error page."""
        assert self.oauth is not None
        params = {k: v for k, v in request.query_params.items() if len(v) <= 4096}
        try:
            cookie, data, next_url = await self.oauth.callback(params, request.cookies.get(BINDING_COOKIE))
        except SignInError as exc:
            resp = self.error_page(exc.status, exc.title, exc.message)
            self.drop_cookie(resp, BINDING_COOKIE)
            return resp
        log.info("signed in %s", data.did)
        if self.views is not None:  # an account without an Open Music profile goes to /welcome first
            from web.profile import landing
            next_url = await landing(self, cookie, next_url)
        resp = RedirectResponse(next_url, status_code=303)
        self.set_cookie(resp, SESSION_COOKIE, cookie, max_age=self.web.session_ttl_s)
        self.drop_cookie(resp, BINDING_COOKIE)
        return resp

    async def logout(self, request: Request) -> Response:
        """POST /logout: revoke the tokens, forget the session (with ``everywhere=1``: every session
        of the account, in every browser), back to /login."""
        assert self.oauth is not None and self.sealer is not None
        try:
            form = await self.read_form(request)
        except PageError as exc:
            return self.error_page(exc.status, exc.title, exc.message)
        cookie = request.cookies.get(SESSION_COOKIE)
        user = await self.oauth.session(cookie)
        if user is None:
            resp = RedirectResponse("/login", status_code=303)
            self.drop_cookie(resp, SESSION_COOKIE)
            return resp
        if not csrf.check(self.sealer.csrf_key, f"session:{user.key}", form.get(csrf.FIELD)):
            return self.error_page(403, "Form expired", "This sign-out was not sent from our page. You are still "
                                   "signed in; use the Sign out button on your page.", user=user)
        if form.get("everywhere") == "1":
            count = await self.oauth.sign_out_everywhere(user.did)
            log.info("signed out %s everywhere (%d sessions)", user.did, count)
        else:
            await self.oauth.sign_out(cookie)
            log.info("signed out %s", user.did)
        resp = RedirectResponse("/login?signed_out=1", status_code=303)
        self.drop_cookie(resp, SESSION_COOKIE)
        return resp

    async def me(self, request: Request) -> Response:
        """GET /me: who is signed in (no cookie: to /login; a cookie we do not know: 401)."""
        assert self.sealer is not None
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return RedirectResponse("/login", status_code=303)
        user = await self.current_user(request)
        if user is None:
            resp = self.error_page(401, "Not signed in", "Your session has ended or is not valid. Sign in again.")
            self.drop_cookie(resp, SESSION_COOKIE)
            return resp
        if self.views is not None:  # the listener's home: profile, plays, likes (web.profile)
            from web.profile import home
            return await home(self, request, user)
        return self.render("me.html", user=user, csrf_field=csrf.FIELD,
                           csrf_token=csrf.token(self.sealer.csrf_key, f"session:{user.key}"))

    async def not_found(self, request: Request, exc: Exception | None = None) -> Response:
        """A path nothing serves: a page for browsers (links home and to search), an XRPC-style JSON
        error for ``/xrpc/`` and for clients that do not ask for HTML."""
        if request.url.path.startswith("/xrpc/") or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"error": "NotFound", "message": f"nothing is served at {request.url.path[:200]}"},
                                status_code=404)
        user = await self.user_session(request.cookies.get(SESSION_COOKIE))
        _ = self.templates.gettext
        return self.render("error.html", status=404, title=_("Page not found"), user=user,
                           message=_("There is no page at this address. Search for music, or start from the home page."))

    async def client_metadata(self, request: Request) -> Response:
        """GET /oauth/client-metadata.json (404 for the loopback client, which has none)."""
        assert self.oauth is not None
        meta = self.oauth.client_metadata()
        if meta is None:
            return JSONResponse({"error": "NotFound", "message": "this server uses the loopback client"},
                                status_code=404)
        return JSONResponse(meta, headers={"Cache-Control": "public, max-age=600"})

    async def jwks(self, request: Request) -> Response:
        """GET /oauth/jwks.json: the confidential client's public keys."""
        assert self.oauth is not None
        return JSONResponse(self.oauth.jwks(), headers={"Cache-Control": "public, max-age=600"})

    async def user_session(self, cookie: str | None) -> UserSession | None:
        """The ``UserSession`` of a session cookie value (for other rooms of the web app)."""
        assert self.oauth is not None
        try:
            return await self.oauth.session(cookie)
        except SessionEnded:
            return None


def format_number(value: int | None) -> str:
    """A count in the current request's language ("1,234" in English, "1234" or "12.345" in Spanish)."""
    return "" if value is None else format_decimal(value, locale=current_locale.get())


def format_duration(ms: int | None) -> str:
    """Milliseconds as ``m:ss`` (or ``h:mm:ss``); empty for None."""
    if ms is None:
        return ""
    seconds = max(0, int(ms)) // 1000
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def routes(web: WebApp) -> list[BaseRoute]:
    """The web app's routes, to mount beside the AppView's (the caller starts and stops ``web``).
    With ``web.views`` set, the catalog pages and the listener's writes come first (``web.pages``)."""
    from web.charts import routes as charts_routes
    from web.copyright import routes as copyright_routes
    from web.dashboard import routes as dashboard_routes
    from web.embed import Embeds
    from web.label_prefs import routes as label_pref_routes
    from web.lexicons import routes as lexicon_routes
    from web.moderation import routes as moderation_routes
    from web.money import Money
    from web.notifications import routes as notification_routes
    from web.offline import routes as offline_routes
    from web.pages import Pages
    from web.payouts import Payouts
    from web.playlists import routes as playlist_routes
    from web.profile import routes as profile_routes
    from web.recommend import routes as recommend_routes
    from web.share import routes as share_routes
    from web.social import Social
    from web.studio_album import routes as studio_routes

    catalog: list[BaseRoute] = []
    if web.views is not None:
        pages = Pages(web)
        money = Money(web, pages)
        catalog = [*pages.routes(), *money.routes(), *Social(web, pages).routes(), *Payouts(money).routes(),
                   *Embeds(web, pages).routes(), *studio_routes(web, pages), *dashboard_routes(web, pages), *charts_routes(web, pages),
                   *playlist_routes(web, pages), *recommend_routes(web, pages), *notification_routes(web, pages),
                   *share_routes(web, pages), *moderation_routes(web, pages), *copyright_routes(web, pages),
                   *label_pref_routes(web, pages)]
    return [*catalog, *offline_routes(web), *lexicon_routes(web),
        *profile_routes(web),
        Route("/login", web.login_page, methods=["GET"]),
        Route("/login", web.login_submit, methods=["POST"]),
        Route("/oauth/callback", web.callback, methods=["GET"]),
        Route("/logout", web.logout, methods=["POST"]),
        Route("/me", web.me, methods=["GET"]),
        Route("/oauth/client-metadata.json", web.client_metadata, methods=["GET"]),
        Route("/oauth/jwks.json", web.jwks, methods=["GET"]),
        Mount("/static/web", StaticFiles(directory=HERE / "static"), name="web-static"),
    ]


class CompressPages:
    """gzip (Starlette's ``GZipMiddleware``) for the web app's pages and static files only: the API,
    blobs (byte ranges of audio must stay byte ranges) and anything else pass through untouched."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = COMPRESSED_PREFIXES) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024, compresslevel=6)
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path and not path.startswith(UNCOMPRESSED_PREFIXES) and (path == "/" or path.startswith(self.prefixes)):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def middleware(web: WebApp) -> list[Middleware]:
    """ASGI middleware the web app's routes need around them: the request's language (``web.i18n``)
    and gzip for pages and static files (``CompressPages``)."""
    return [Middleware(LocaleMiddleware, secure=web.secure_cookies), Middleware(CompressPages)]


def create_web_app(settings: Settings, web_settings: WebSettings | None = None, *,
                   transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """A Starlette app serving only the web app's routes (``app.state.web`` is the ``WebApp``)."""
    web = WebApp(settings, web_settings, transport=transport)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await web.start()
        try:
            yield
        finally:
            await web.stop()

    app = Starlette(routes=routes(web), middleware=middleware(web), lifespan=lifespan)
    app.state.web = web
    return app


__all__ = ["WebApp", "create_web_app", "digest", "middleware", "routes"]
