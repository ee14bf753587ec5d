"""Sign in with an atproto account (OAuth, backend-for-frontend) and act as the user on their PDS.

- ``OAuthClient``: PAR + PKCE S256 + DPoP sign-in, callback checks (``iss``, ``sub``, the DID's
  authorization server), refresh before expiry, revocation on sign-out; loopback client for the
  local network, confidential ``private_key_jwt`` client in production.
- ``UserSession``: a DPoP-bound XRPC session on the user's PDS (``request``, ``call``,
  ``create_record``, ``service_auth`` for our own procedures).
- ``SessionStore``: pending authorizations and sessions in SQLite, secrets sealed (AES-GCM).

Why this is our own code on ``joserfc`` rather than the ``atproto-oauth`` package: README.md here."""

from web.oauth.client import (
    ClientConfigError,
    OAuthClient,
    PdsError,
    SessionEnded,
    SignInError,
    UserSession,
    is_loopback_url,
    load_client_key,
)
from web.oauth.http import guarded_client
from web.oauth.store import PendingAuth, PendingError, SessionData, SessionStore

__all__ = ["ClientConfigError", "OAuthClient", "PdsError", "PendingAuth", "PendingError", "SessionData",
           "SessionEnded", "SessionStore", "SignInError", "UserSession", "guarded_client", "is_loopback_url",
           "load_client_key"]
