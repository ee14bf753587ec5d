"""Paths the web app sends people to: the ``next`` of a form or sign-in, checked to stay on this site,
and the sign-in link that brings a reader back to the page they were on."""

from __future__ import annotations

from urllib.parse import urlencode

from web.i18n import current_path, current_query

#: Pages a sign-in link does not come back to (sign-in itself, and pages that only make sense signed out).
NO_RETURN = ("/login", "/oauth/", "/logout")


def local_path(value: str | None, fallback: str) -> str:
    """``value`` when it is a path on this site (``/...``, not ``//host`` nor ``/\\host``), else ``fallback``."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")) and len(value) <= 2048:
        return value
    return fallback


def login_href() -> str:
    """``/login?next=<this page>`` for the current request (plain ``/login`` from the sign-in pages)."""
    path = current_path.get()
    if not path or path.startswith(NO_RETURN) or path == "/me":
        return "/login"
    query = current_query.get().decode("utf-8", "replace")
    return "/login?" + urlencode({"next": f"{path}?{query}" if query else path})
