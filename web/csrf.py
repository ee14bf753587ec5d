"""CSRF protection for every POST: OWASP's "signed double-submit cookie", bound to the session.

The token in a form is ``HMAC-SHA256(csrf_key, binding)`` where the binding is what the browser's
cookie names: the session (``session:<sha256 of the session cookie>``) when signed in, else a random
anonymous cookie (``anon:<value>``, for the sign-in form). A cross-site page can make the browser
send the cookie but can neither read it nor compute the HMAC, so it cannot forge the form field.
SameSite=Lax on the cookies is a second layer, not the defence."""

from __future__ import annotations

import base64
import hashlib
import hmac

#: The form field that carries the token.
FIELD = "csrf_token"


def token(key: bytes, binding: str) -> str:
    """The CSRF token for ``binding`` (see the module docstring)."""
    mac = hmac.new(key, b"openmusic-csrf\x00" + binding.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def check(key: bytes, binding: str | None, presented: object) -> bool:
    """True when ``presented`` is the token for ``binding`` (constant-time); False when either is missing."""
    if not binding or not isinstance(presented, str) or not presented or len(presented) > 128:
        return False
    return hmac.compare_digest(token(key, binding), presented)
