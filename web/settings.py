"""Settings of the web app that ``core.config.Settings`` does not hold (yet): secrets and the
OAuth client's choices. Each field is read from ``OPENMUSIC_<FIELD_NAME_UPPER>``.

Dev/test mode is not a separate switch: it is ``Settings.allow_private_hosts`` (the same flag that
lets the AppView reach a loopback PDS and PLC). Only in that mode may the session key be generated
into the data directory, and may OAuth servers be reached over plain http on private addresses."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import env_values

#: What the app asks for today. The target is a permission set of our own plus blob scopes
#: (``TARGET_SCOPE``); until ``fm.openmusic`` publishes one, every PDS gets this.
DEFAULT_SCOPE = "atproto transition:generic"
#: The scope we mean to ask for once the permission-set lexicon (lexicons/fm/openmusic/authFull.json) is
#: published; in production add the audience of its rpc permissions:
#: ``include:fm.openmusic.authFull?aud=<service DID>%23openmusic_appview`` (see web/oauth/README.md).
#: A permission set grants only its own namespace, so Share to Bluesky's post and the opt-in teal.fm
#: copies of plays are asked for apart.
TARGET_SCOPE = ("atproto include:fm.openmusic.authFull repo:app.bsky.feed.post?action=create "
                "repo:fm.teal.feed.play?action=create blob:audio/* blob:image/*")
#: Stripe.js, served by Stripe (never bundled: Stripe requires loading it from its own origin).
STRIPE_JS_URL = "https://js.stripe.com/v3/"


@dataclass
class WebSettings:
    """Secrets and OAuth choices of the web app (``OPENMUSIC_*`` environment variables)."""

    #: Serve the web app (pages, sign-in) beside the AppView in ``openmusic run``. Off: the XRPC API only.
    web_enabled: bool = True
    #: AES-256-GCM key(s) for tokens and DPoP keys at rest: 32 bytes, base64url or hex. Several,
    #: comma-separated, for rotation: the first seals, all open. Empty: refused outside dev mode; in
    #: dev mode a key is generated into ``<data dir>/web-session.key`` (mode 0600).
    session_key: str = field(default="", repr=False)
    #: The confidential client's ES256 (P-256) private key, a JWK (JSON) or PEM. Required when the
    #: public URL is not loopback http; its public half is served at ``/oauth/jwks.json``.
    oauth_private_key: str = field(default="", repr=False)
    #: Scopes to request (space-separated, ``atproto`` first).
    oauth_scope: str = DEFAULT_SCOPE
    #: Asked for instead when the authorization server refuses ``oauth_scope`` with ``invalid_scope``
    #: (a PDS that knows no permission sets, or one that cannot resolve ours).
    oauth_fallback_scope: str = DEFAULT_SCOPE
    #: Longest a browser session lasts, seconds (it also ends when the PDS refuses a refresh).
    session_ttl_s: int = 14 * 86400
    #: Seconds a pending sign-in (from the PDS redirect to the callback) stays valid.
    auth_request_ttl_s: int = 600
    #: Refresh an access token this many seconds before it expires.
    refresh_margin_s: int = 60
    #: Largest form body accepted, bytes.
    max_form_bytes: int = 16 * 1024
    #: Stripe's publishable key (``pk_...``) for Stripe.js on the wallet page. Empty: a test key when
    #: ``Settings.stripe_api_base`` points at localstripe; otherwise card payments are off in the web app.
    stripe_publishable_key: str = ""
    #: Where the wallet page loads Stripe.js from. Empty: Stripe's own (``STRIPE_JS_URL``), or
    #: localstripe's stand-in (``<stripe_api_base>/js.stripe.com/v3/``) when the API base is another server.
    stripe_js_url: str = ""
    #: Where the browser libraries installed from npm (``web/package.json``) are: a ``node_modules``
    #: directory. Empty: ``web/node_modules`` beside the code (``make setup`` installs it there); the
    #: container image sets its own (see the Dockerfile).
    vendor_dir: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> WebSettings:
        """Read ``OPENMUSIC_*`` variables (default ``os.environ``), then apply non-None ``overrides``
        (``core.config.env_values``). Raises ``ValueError`` for an integer that does not parse."""
        values = env_values(cls, environ, overrides)
        return cls(**values)  # type: ignore[arg-type]
