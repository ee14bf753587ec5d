"""The web app's languages (Babel catalogs, Jinja2's i18n extension): English (the source) and Spanish.

Catalogs are ``web/locales/<lang>/LC_MESSAGES/messages.po``, compiled in memory at start-up (no
build step). Each request's language is, in order: ``?lang=`` (remembered in the ``om_lang``
cookie for a year), the ``om_lang`` cookie, the best match of ``Accept-Language`` (RFC 9110
§12.5.4), else English. ``LocaleMiddleware`` puts it in ``current_locale`` for the request, and
``Languages.environment`` gives the Jinja2 environment of that language.

Adding a string: mark it in a template (``{{ _("...") }}``, ``{% trans %}``) or in Python
(``gettext``), run ``make i18n`` (``pybabel extract`` + ``update``), translate the new entries in
the ``.po`` files."""

from __future__ import annotations

import contextvars
import io
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import jinja2
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOCALES = Path(__file__).resolve().parent / "locales"
#: Languages served, the first the default (the source language of the templates).
LANGUAGES = {"en": "English", "es": "Español"}
DEFAULT = "en"
COOKIE = "om_lang"
current_locale: contextvars.ContextVar[str] = contextvars.ContextVar("openmusic_locale", default=DEFAULT)
#: The request's query string (raw bytes, as in the ASGI scope), for links that switch the language.
current_query: contextvars.ContextVar[bytes] = contextvars.ContextVar("openmusic_query", default=b"")
#: The request's path, for links that come back to it (``web.paths.login_href``).
current_path: contextvars.ContextVar[str] = contextvars.ContextVar("openmusic_path", default="")


def load_translations(lang: str) -> NullTranslations:
    """The compiled catalog of ``lang`` (``NullTranslations`` for the source language or a missing file)."""
    po = LOCALES / lang / "LC_MESSAGES" / "messages.po"
    if lang == DEFAULT or not po.exists():
        return NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf)


class Languages:
    """One Jinja2 environment per language, sharing a loader and the ``filters``."""

    def __init__(self, loader: jinja2.BaseLoader, filters: dict[str, Callable]) -> None:
        self.translations = {lang: load_translations(lang) for lang in LANGUAGES}
        self.environments: dict[str, jinja2.Environment] = {}
        for lang, translations in self.translations.items():
            env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(default=True),
                                     extensions=["jinja2.ext.i18n"])
            env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
            env.filters.update(filters)
            env.globals.update(languages=LANGUAGES, lang_href=lang_href)
            self.environments[lang] = env

    @property
    def filters(self) -> _Filters:
        """Add filters to every language's environment: ``languages.filters.update(name=func)``."""
        return _Filters(self.environments.values())

    @property
    def globals(self) -> _Globals:
        """Add globals to every language's environment: ``languages.globals.update(name=value)``."""
        return _Globals(self.environments.values())

    def environment(self) -> jinja2.Environment:
        """The environment of the current request's language."""
        return self.environments[current_locale.get()]

    def gettext(self, message: str) -> str:
        """``message`` in the current request's language (for strings made in Python)."""
        return self.translations[current_locale.get()].gettext(message)


class _Filters:
    def __init__(self, environments) -> None:
        self.environments = list(environments)

    def update(self, **filters: Callable) -> None:
        for env in self.environments:
            env.filters.update(filters)


def negotiate(accept_language: str) -> str | None:
    """The best of ``LANGUAGES`` for an ``Accept-Language`` header value (q-values honoured), or None."""
    ranked = []
    for i, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > 0:
            ranked.append((-q, i, primary))
    return min(ranked)[2] if ranked else None


def choose(conn: HTTPConnection) -> tuple[str, bool]:
    """(language of this request, whether ``?lang=`` chose it and the cookie should remember it)."""
    asked = conn.query_params.get("lang", "")
    if asked in LANGUAGES:
        return asked, True
    cookie = conn.cookies.get(COOKIE, "")
    if cookie in LANGUAGES:
        return cookie, False
    return negotiate(conn.headers.get("accept-language", "")) or DEFAULT, False


class LocaleMiddleware:
    """ASGI middleware: sets ``current_locale`` for each HTTP request (``choose``), and the
    ``om_lang`` cookie when ``?lang=`` picked a language."""

    def __init__(self, app: ASGIApp, secure: bool = False) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lang, remember = choose(HTTPConnection(scope))
        token = current_locale.set(lang)
        query_token = current_query.set(scope.get("query_string", b""))
        path_token = current_path.set(scope.get("path", ""))

        async def send_with_cookie(message: Message) -> None:
            if remember and message["type"] == "http.response.start":
                cookie = f"{COOKIE}={lang}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly"
                if self.secure:
                    cookie += "; Secure"
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
            await send(message)
        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            current_locale.reset(token)
            current_query.reset(query_token)
            current_path.reset(path_token)


def lang_href(code: str) -> str:
    """A link to this page in language ``code``: the request's query with ``lang`` set (a search
    keeps its words and order when the reader switches language)."""
    pairs = [(k, v) for k, v in parse_qsl(current_query.get().decode("utf-8", "replace"), keep_blank_values=True) if k != "lang"]
    return "?" + urlencode([*pairs, ("lang", code)])


class _Globals(_Filters):
    def update(self, **values: object) -> None:  # type: ignore[override]
        for env in self.environments:
            env.globals.update(values)
